// Brewlytics "Monday-morning rush" for k6 — the scenario of `brewlytics loadtest`:
// orders from known customers and walk-ins with 1–5 menu items, statuses advanced
// (preparing → ready → completed), some orders cancelled, a few deleted, lookups, new
// customers and products now and then, the odd price change. MIX=browse: menu visits
// instead, as `brewlytics loadtest --mix browse` makes them — impressions of 3–8 products and
// 0–3 clicks in one POST /events under a session id, half the visits with a click ending in
// an order of the clicked products carrying that session id (for click attribution).
//
// Knobs (environment, `k6 run -e NAME=value loadtest/k6/orders.js`):
//   BREWLYTICS_API_KEY  the API key sent with every request (required; `brewlytics up` writes
//                 one with every scope to .brewlytics/api-key:
//                 k6 run -e BREWLYTICS_API_KEY="$(cat .brewlytics/api-key)" loadtest/k6/orders.js).
//                 It needs orders:write and catalog:read, and for MIX=rush catalog:write
//                 and customers:write too.
//   API           base URL of the API                   (default http://127.0.0.1:8000)
//   RATE          open loop: iterations started per second (constant-arrival-rate)
//   VUS           closed loop when RATE is unset: virtual users (default 10)
//   DURATION      how long, k6 syntax                   (default 30s)
//   MAX_VUS       open loop: most VUs k6 may allocate   (default 200)
//   MIX           rush (whole scenario), orders (POST /orders only) or browse (menu visits)
//                                                        (default rush)
//   PRODUCT_IDS   menu product ids, e.g. "1-30" or "3,5,8" (default: 8 products created in setup)
//   CUSTOMER_IDS  customer ids, same syntax              (default: 20 customers created in setup)
//   WALK_IN_PCT   percentage of walk-in orders (no customer) (default 25)
//
// End-to-end freshness (201 → facts in OLAP) needs the OLAP database: measure it with
// `brewlytics loadtest`. k6 reports request rates and latencies, tagged per endpoint.

import http from 'k6/http';
import { check } from 'k6';

const API = (__ENV.API || 'http://127.0.0.1:8000').replace(/\/+$/, '');
const RATE = __ENV.RATE ? Number(__ENV.RATE) : 0;
const VUS = Number(__ENV.VUS || 10);
const DURATION = __ENV.DURATION || '30s';
const MAX_VUS = Number(__ENV.MAX_VUS || 200);
const MIX = __ENV.MIX || 'rush';
const WALK_IN_PCT = Number(__ENV.WALK_IN_PCT || 25);
const API_KEY = __ENV.BREWLYTICS_API_KEY || '';
if (!API_KEY) {
  throw new Error('set BREWLYTICS_API_KEY (brewlytics up writes one to .brewlytics/api-key)');
}
const AUTH = { Authorization: `Bearer ${API_KEY}` };
const JSON_HEADERS = { headers: { ...AUTH, 'Content-Type': 'application/json' } };
const GET_HEADERS = { headers: AUTH };

export const options = {
  scenarios: {
    rush: RATE > 0
      ? {
          executor: 'constant-arrival-rate',
          rate: RATE,
          timeUnit: '1s',
          duration: DURATION,
          preAllocatedVUs: Math.min(MAX_VUS, Math.max(10, Math.ceil(RATE / 10))),
          maxVUs: MAX_VUS,
        }
      : { executor: 'constant-vus', vus: VUS, duration: DURATION },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    'http_req_duration{name:POST /orders}': ['p(95)<300', 'p(99)<1000'],
  },
  summaryTrendStats: ['avg', 'med', 'p(95)', 'p(99)', 'max'],
};

// Weights per thousand, as in `brewlytics loadtest --mix rush`.
const WEIGHTS = MIX === 'orders'
  ? [['place', 1]]
  : MIX === 'browse'
  ? [['browse', 1]]
  : [
      ['place', 560], ['advance', 300], ['cancel', 40], ['delete', 10],
      ['get', 60], ['customer', 15], ['product', 5], ['price', 10],
    ];
const WEIGHT_TOTAL = WEIGHTS.reduce((sum, [, w]) => sum + w, 0);
const NEXT_STATUS = { placed: 'preparing', preparing: 'ready', ready: 'completed' };
const CATEGORIES = ['coffee', 'tea', 'pastry', 'cold drinks'];
const PAYMENT_METHODS = ['card', 'cash', 'mobile'];

function pickInt(n) {
  return Math.floor(Math.random() * n);
}

function pick(list) {
  return list[pickInt(list.length)];
}

function price() {
  const cents = 150 + pickInt(601);
  return `${Math.floor(cents / 100)}.${String(cents % 100).padStart(2, '0')}`;
}

// "1-30" or "3,5,8-10" → [1, ..., 30]
function parseIds(text) {
  const ids = [];
  for (const part of String(text).split(',').map((s) => s.trim()).filter(Boolean)) {
    const [lo, hi] = part.split('-').map(Number);
    for (let i = lo; i <= (hi || lo); i += 1) ids.push(i);
  }
  return ids;
}

function post(path, body, name) {
  return http.post(`${API}${path}`, JSON.stringify(body), { ...JSON_HEADERS, tags: { name } });
}

function patch(path, body, name) {
  return http.patch(`${API}${path}`, JSON.stringify(body), { ...JSON_HEADERS, tags: { name } });
}

export function setup() {
  const tag = Math.random().toString(16).slice(2, 10);
  const stores = http.get(`${API}/stores`, GET_HEADERS).json().map((s) => s.id);
  const employees = http.get(`${API}/employees/active`, GET_HEADERS).json()
    .map((e) => ({ id: e.id, store: e.store_id || stores[0] }));
  if (stores.length === 0 || employees.length === 0) {
    throw new Error('the API has no stores or active employees: run `brewlytics seed` first');
  }
  const products = __ENV.PRODUCT_IDS ? parseIds(__ENV.PRODUCT_IDS) : [];
  for (let i = 0; products.length === 0 && i < 8; i += 1) {
    const r = post('/products', { name: `k6 special ${tag}-${i}`, category: pick(CATEGORIES), price: price() }, 'POST /products');
    if (r.status === 201) products.push(r.json().id);
  }
  if (products.length === 0) throw new Error('no products: set PRODUCT_IDS or allow POST /products');
  const customers = __ENV.CUSTOMER_IDS ? parseIds(__ENV.CUSTOMER_IDS) : [];
  for (let i = 0; customers.length < 20 && !__ENV.CUSTOMER_IDS && i < 20; i += 1) {
    const r = post('/customers', { name: `k6 customer ${i}`, email: `k6-${tag}-${i}@example.com` }, 'POST /customers');
    if (r.status === 201) customers.push(r.json().id);
  }
  return { tag, employees, products, customers };
}

// Orders this VU placed and may still act on: { id, status }.
const myOrders = [];
let counter = 0;

function takeOrder() {
  if (myOrders.length === 0) return null;
  const i = pickInt(myOrders.length);
  const order = myOrders[i];
  myOrders[i] = myOrders[myOrders.length - 1];
  myOrders.pop();
  return order;
}

function basket(products) {
  const r = pickInt(100);
  const size = Math.min(products.length, r < 35 ? 1 : r < 65 ? 2 : r < 85 ? 3 : r < 95 ? 4 : 5);
  const chosen = new Set();
  while (chosen.size < size) chosen.add(pick(products));
  return [...chosen].map((id) => ({ product_id: id, quantity: pick([1, 1, 1, 1, 1, 1, 1, 2, 2, 3]) }));
}

function placeOrder(data, visit) {
  const employee = pick(data.employees);
  const walkIn = data.customers.length === 0 || pickInt(100) < WALK_IN_PCT;
  const r = post('/orders', {
    customer_id: walkIn ? null : pick(data.customers),
    employee_id: employee.id,
    store_id: employee.store,
    payment_method: pick(PAYMENT_METHODS),
    items: visit ? visit.items : basket(data.products),
    session_id: visit ? visit.session : null,
  }, 'POST /orders');
  if (check(r, { 'order placed': (res) => res.status === 201 })) {
    if (myOrders.length < 10000) myOrders.push({ id: r.json().id, status: 'placed' });
  }
}

// A menu visit: impressions, a few clicks a moment later, sometimes an order in the session.
function browse(data) {
  counter += 1;
  const session = `k6-${data.tag}-${__VU}-${counter}`;
  const shown = [];
  const want = Math.min(data.products.length, 3 + pickInt(6));
  while (shown.length < want) {
    const p = pick(data.products);
    if (!shown.includes(p)) shown.push(p);
  }
  const r = pickInt(10);
  const clicked = shown.slice(0, r < 4 ? 0 : r < 8 ? 1 : r < 9 ? 2 : 3);
  const ago = (s) => new Date(Date.now() - s * 1000).toISOString();
  const events = shown.map((p) => ({ kind: 'impression', session_id: session, product_id: p, occurred_at: ago(5), context: { page: 'menu' } }))
    .concat(clicked.map((p) => ({ kind: 'click', session_id: session, product_id: p, occurred_at: ago(1), context: { page: 'menu' } })));
  const res = post('/events', events, 'POST /events');
  if (check(res, { 'events accepted': (x) => x.status === 202 }) && clicked.length > 0 && pickInt(2) === 0) {
    placeOrder(data, { session, items: clicked.map((p) => ({ product_id: p, quantity: 1 })) });
  }
}

function chooseAction() {
  let x = pickInt(WEIGHT_TOTAL);
  for (const [action, w] of WEIGHTS) {
    if (x < w) return action;
    x -= w;
  }
  return 'place';
}

export default function (data) {
  const action = chooseAction();
  if (['advance', 'cancel', 'delete', 'get'].includes(action) && myOrders.length === 0) {
    placeOrder(data);
    return;
  }
  switch (action) {
    case 'browse':
      browse(data);
      break;
    case 'advance':
    case 'cancel': {
      const order = takeOrder();
      const cancel = action === 'cancel' && (order.status === 'placed' || order.status === 'preparing');
      const status = cancel ? 'cancelled' : NEXT_STATUS[order.status];
      const r = patch(`/orders/${order.id}`, { status }, 'PATCH /orders/{id}');
      if (check(r, { 'status changed': (res) => res.status === 200 }) && NEXT_STATUS[status]) {
        myOrders.push({ id: order.id, status });
      }
      break;
    }
    case 'delete': {
      const order = takeOrder();
      const r = http.del(`${API}/orders/${order.id}`, null, { ...GET_HEADERS, tags: { name: 'DELETE /orders/{id}' } });
      check(r, { 'order deleted': (res) => res.status === 204 });
      break;
    }
    case 'get': {
      const order = myOrders[pickInt(myOrders.length)];
      const r = http.get(`${API}/orders/${order.id}`, { ...GET_HEADERS, tags: { name: 'GET /orders/{id}' } });
      check(r, { 'order read': (res) => res.status === 200 });
      break;
    }
    case 'customer': {
      counter += 1;
      const r = post('/customers', {
        name: `k6 customer ${__VU}-${counter}`,
        email: `k6-${data.tag}-${__VU}-${counter}@example.com`,
      }, 'POST /customers');
      check(r, { 'customer created': (res) => res.status === 201 });
      break;
    }
    case 'product': {
      counter += 1;
      const r = post('/products', {
        name: `k6 special ${data.tag}-${__VU}-${counter}`,
        category: pick(CATEGORIES),
        price: price(),
      }, 'POST /products');
      check(r, { 'product created': (res) => res.status === 201 });
      break;
    }
    case 'price': {
      const r = patch(`/products/${pick(data.products)}`, { price: price() }, 'PATCH /products/{id}');
      check(r, { 'price changed': (res) => res.status === 200 });
      break;
    }
    default:
      placeOrder(data);
  }
}
