//! The check every HTTP server runs before a route that needs a scope: [`Guard::gate`], as
//! one axum middleware per server, with the server's own table of what each route needs
//! ([`Access`]).
//!
//! Credentials are a bearer key (`Authorization: Bearer brw_…`) or, on servers with pages, a
//! session cookie opened by the login form ([`Guard::login_routes`]). The answers:
//!
//! | case | answer |
//! |---|---|
//! | no credentials | 401 (a page: 303 to `/login`) |
//! | not a bearer key, a malformed key | 401 |
//! | unknown key, wrong secret, revoked key | 401, one message for all three |
//! | a valid key without the scope | 403 naming the scope |
//! | a failure past the client's limit ([`super::limit`]) | 429 with `Retry-After` |
//! | the key store unreadable | 503 |
//!
//! Errors are `{"error": "..."}`. A refused request never reaches its handler, so nothing is
//! written. Refusals are counted ([`super::metrics`]) and logged with their reason and the
//! client's address, never with what was presented.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Form, FromRequest, MatchedPath, Query, Request, State};
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, RETRY_AFTER, SET_COOKIE,
    WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::client::{client_ip, IpNet};
use super::key::PresentedKey;
use super::limit::{FailureLimiter, LimitConfig};
use super::metrics::{AuthMetrics, Reason};
use super::scope::Scope;
use super::session::{self, Sessions, SESSION_TTL};
use super::store::{KeyRefusal, KeyStore, Principal};
use crate::web::percent_encode;

const LOGIN_HTML: &str = include_str!("login.html");
const LOGIN_CSS: &str = include_str!("login.css");

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing (`/health`, `/ready`, `/openapi.json`, the login page).
    Open,
    /// A key or session with the scope; refusals are JSON.
    Json(Scope),
    /// The same, for an HTML page: without credentials, a redirect to the login form.
    Page(Scope),
}

/// A server's table of what each of its routes needs, by method and the route's template as
/// the router matched it (`/orders/{id}`). A route a table does not know should need `admin`:
/// a route added without a line in the table is then closed, not open.
pub type AccessTable = fn(&Method, &str) -> Access;

/// A guard with its server's table: the state of [`route_gate`].
#[derive(Clone)]
pub struct RouteGate {
    guard: Guard,
    table: AccessTable,
}

/// The middleware of every server: the matched route's [`Access`] from the table, checked by
/// the guard. A request no route matched goes on (to the 404). Layer it on the server's routes
/// (not its login routes): `router.layer(from_fn_with_state(guard.by_route(table), route_gate))`.
pub async fn route_gate(State(gate): State<RouteGate>, req: Request, next: Next) -> Response {
    let access = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(Access::Open, |route| {
            (gate.table)(req.method(), route.as_str())
        });
    gate.guard.gate(access, req, next).await
}

/// The peer address of a connection, set by [`crate::serve`] (plain or TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// How one server checks credentials.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// The server, in logs and the session cookie's name: `api`, `dashboard`, `replicator`.
    pub surface: &'static str,
    /// The title of its login page (servers with pages).
    pub title: &'static str,
    /// The scope the login form asks for; `None`: no pages, no sessions.
    pub page_scope: Option<Scope>,
    pub limit: LimitConfig,
    /// Served over TLS: the session cookie is `Secure`.
    pub secure_cookies: bool,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpNet>,
    pub session_ttl: Duration,
}

impl GuardConfig {
    /// A server of JSON only (the API).
    pub fn json(surface: &'static str) -> Self {
        Self {
            surface,
            title: "Brewlytics",
            page_scope: None,
            limit: LimitConfig::default(),
            secure_cookies: false,
            trusted_proxies: Vec::new(),
            session_ttl: SESSION_TTL,
        }
    }

    /// A server with pages behind a login that asks for `scope`.
    pub fn pages(surface: &'static str, title: &'static str, scope: Scope) -> Self {
        Self {
            title,
            page_scope: Some(scope),
            ..Self::json(surface)
        }
    }
}

/// The credentials check of one server; cheap to clone.
#[derive(Clone)]
pub struct Guard(Arc<Inner>);

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("surface", &self.0.cfg.surface)
            .field("open", &self.is_open())
            .finish()
    }
}

struct Inner {
    store: Option<Arc<KeyStore>>,
    cfg: GuardConfig,
    cookie: String,
    limiter: FailureLimiter,
    metrics: AuthMetrics,
    sessions: Sessions,
}

/// Why a request is refused.
#[derive(Debug)]
enum Refusal {
    Unauthenticated { reason: Reason, presented: bool },
    Forbidden(Scope),
    Limited(Duration),
    Unavailable,
}

impl Guard {
    /// Checks against `store`.
    pub fn new(store: Arc<KeyStore>, cfg: GuardConfig) -> Self {
        Self::build(Some(store), cfg)
    }

    /// No checks at all (`--insecure-no-auth`): every route is open.
    pub fn insecure(cfg: GuardConfig) -> Self {
        Self::build(None, cfg)
    }

    fn build(store: Option<Arc<KeyStore>>, cfg: GuardConfig) -> Self {
        Self(Arc::new(Inner {
            store,
            cookie: format!("brewlytics_{}_session", cfg.surface),
            limiter: FailureLimiter::new(cfg.limit),
            metrics: AuthMetrics::new(),
            sessions: Sessions::new(cfg.session_ttl),
            cfg,
        }))
    }

    /// This guard with a server's table of routes, for [`route_gate`].
    pub fn by_route(&self, table: AccessTable) -> RouteGate {
        RouteGate {
            guard: self.clone(),
            table,
        }
    }

    /// Whether every route is open (`--insecure-no-auth`).
    pub fn is_open(&self) -> bool {
        self.0.store.is_none()
    }

    pub fn store(&self) -> Option<&Arc<KeyStore>> {
        self.0.store.as_ref()
    }

    pub fn metrics(&self) -> &AuthMetrics {
        &self.0.metrics
    }

    /// The name of the session cookie.
    pub fn cookie_name(&self) -> &str {
        &self.0.cookie
    }

    /// Says at start what the server will do: refuse everything while no key exists, or
    /// check nothing.
    pub async fn announce(&self) {
        let surface = self.0.cfg.surface;
        match &self.0.store {
            None => tracing::warn!(
                surface,
                "authentication is OFF (--insecure-no-auth): anyone who can reach this server may use it"
            ),
            Some(store) => match store.any_active().await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    surface,
                    "no API key exists, so every request that needs one is refused: \
                     create one with `brewlytics api-key create --name NAME --scope SCOPE`"
                ),
                Err(e) => tracing::warn!(surface, error = %e, "the API keys cannot be read yet"),
            },
        }
    }

    /// The middleware: runs `next` when `access` allows the request, else answers the
    /// refusal. The principal is in the request's extensions for the handler.
    pub async fn gate(&self, access: Access, mut req: Request, next: Next) -> Response {
        let scope = match access {
            Access::Open => return next.run(req).await,
            Access::Json(s) | Access::Page(s) => s,
        };
        if self.is_open() {
            return next.run(req).await;
        }
        match self.authorize(req.headers(), peer(&req), scope).await {
            Ok(principal) => {
                req.extensions_mut().insert(principal);
                next.run(req).await
            }
            Err(refusal) => {
                let page = matches!(access, Access::Page(_));
                let wants_login = page && !req.headers().contains_key(AUTHORIZATION);
                match refusal {
                    Refusal::Unauthenticated { .. } if wants_login => {
                        let next = req
                            .uri()
                            .path_and_query()
                            .map(|p| p.as_str())
                            .unwrap_or("/");
                        redirect(&format!("/login?next={}", percent_encode(next)))
                    }
                    Refusal::Forbidden(scope) if wants_login => self.login_page(
                        StatusCode::FORBIDDEN,
                        &format!("This key may not open this page: it needs the {scope} scope."),
                        "/",
                    ),
                    other => other.into_response(),
                }
            }
        }
    }

    /// The principal of the request's credentials when it holds `scope`.
    async fn authorize(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
        scope: Scope,
    ) -> Result<Principal, Refusal> {
        let client = self.client(headers, peer);
        let outcome = self.identify(headers).await;
        let refusal = match outcome {
            Ok(p) if p.scopes.allows(scope) => return Ok(p),
            Ok(_) => Refusal::Forbidden(scope),
            Err(r) => r,
        };
        Err(self.refused(refusal, client))
    }

    /// Counts and logs a refusal; a failed key past the client's limit becomes a 429.
    fn refused(&self, refusal: Refusal, client: IpAddr) -> Refusal {
        let surface = self.0.cfg.surface;
        let reason = match &refusal {
            Refusal::Unauthenticated { reason, .. } => *reason,
            Refusal::Forbidden(_) => Reason::Forbidden,
            Refusal::Limited(_) | Refusal::Unavailable => return refusal,
        };
        let charged = matches!(
            refusal,
            Refusal::Unauthenticated {
                presented: true,
                ..
            }
        );
        if charged {
            if let Err(wait) = self.0.limiter.charge(client, Instant::now()) {
                self.0.metrics.count(Reason::RateLimited);
                return Refusal::Limited(wait);
            }
        }
        self.0.metrics.count(reason);
        if reason != Reason::Missing {
            tracing::info!(
                target: "brewlytics::auth",
                surface,
                reason = reason.label(),
                client = %client,
                "authentication refused"
            );
        }
        refusal
    }

    /// Who the credentials are: a bearer key, else (on servers with pages) a session.
    async fn identify(&self, headers: &HeaderMap) -> Result<Principal, Refusal> {
        let store = self.0.store.as_ref().ok_or(Refusal::Unavailable)?;
        let mut auth = headers.get_all(AUTHORIZATION).iter();
        if let Some(value) = auth.next() {
            let key = (auth.next().is_none())
                .then(|| bearer(value))
                .flatten()
                .and_then(PresentedKey::parse)
                .ok_or(Refusal::Unauthenticated {
                    reason: Reason::Malformed,
                    presented: true,
                })?;
            return match store.verify(&key).await {
                Err(e) => {
                    tracing::warn!(error = %e, "the API keys cannot be read");
                    Err(Refusal::Unavailable)
                }
                Ok(Ok(p)) => Ok(p),
                Ok(Err(KeyRefusal::Invalid)) => Err(Refusal::Unauthenticated {
                    reason: Reason::Invalid,
                    presented: true,
                }),
                Ok(Err(KeyRefusal::Revoked)) => Err(Refusal::Unauthenticated {
                    reason: Reason::Revoked,
                    presented: true,
                }),
            };
        }
        let missing = Refusal::Unauthenticated {
            reason: Reason::Missing,
            presented: false,
        };
        if self.0.cfg.page_scope.is_none() {
            return Err(missing);
        }
        let key = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|h| session::cookie(h, &self.0.cookie))
            .and_then(|token| self.0.sessions.key_of(token, Instant::now()))
            .ok_or(missing)?;
        match store.active(&key).await {
            Ok(Some(p)) => Ok(p),
            Ok(None) => Err(Refusal::Unauthenticated {
                reason: Reason::Revoked,
                presented: false,
            }),
            Err(_) => Err(Refusal::Unavailable),
        }
    }

    fn client(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> IpAddr {
        let peer = peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        client_ip(peer, forwarded, &self.0.cfg.trusted_proxies)
    }

    /// `GET /login`, `POST /login`, `POST /logout` and `/assets/login.css`, for servers with
    /// pages; merge into the server's router (they are [`Access::Open`]).
    pub fn login_routes<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        Router::new()
            .route("/login", get(login_form).post(login))
            .route("/logout", post(logout))
            .route(
                "/assets/login.css",
                get(|| async { ([(CONTENT_TYPE, "text/css; charset=utf-8")], LOGIN_CSS) }),
            )
            .with_state(self.clone())
    }

    fn login_page(&self, status: StatusCode, message: &str, next: &str) -> Response {
        let scope = self.0.cfg.page_scope.map(Scope::name).unwrap_or("");
        let html = LOGIN_HTML
            .replace("{{title}}", &escape(self.0.cfg.title))
            .replace("{{scope}}", scope)
            .replace("{{message}}", &escape(message))
            .replace("{{next}}", &escape(&safe_next(next)));
        (
            status,
            [
                (CONTENT_TYPE, "text/html; charset=utf-8"),
                (CACHE_CONTROL, "no-store"),
            ],
            html,
        )
            .into_response()
    }
}

fn peer(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<PeerAddr>>()
        .map(|c| c.0 .0.ip())
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn redirect(to: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (LOCATION, to.to_owned()),
            (CACHE_CONTROL, "no-store".into()),
        ],
    )
        .into_response()
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, message, challenge) = match self {
            Refusal::Unauthenticated {
                reason: Reason::Missing,
                ..
            } => (
                StatusCode::UNAUTHORIZED,
                "authentication required: send `Authorization: Bearer <API key>`".to_owned(),
                "Bearer realm=\"brewlytics\"".to_owned(),
            ),
            Refusal::Unauthenticated {
                reason: Reason::Malformed,
                ..
            } => (
                StatusCode::UNAUTHORIZED,
                "malformed credentials: send `Authorization: Bearer brw_…` with a Brewlytics API key"
                    .to_owned(),
                "Bearer realm=\"brewlytics\", error=\"invalid_token\"".to_owned(),
            ),
            Refusal::Unauthenticated { .. } => (
                StatusCode::UNAUTHORIZED,
                "invalid or revoked API key".to_owned(),
                "Bearer realm=\"brewlytics\", error=\"invalid_token\"".to_owned(),
            ),
            Refusal::Forbidden(scope) => (
                StatusCode::FORBIDDEN,
                format!("this API key lacks the scope {scope}"),
                format!("Bearer realm=\"brewlytics\", error=\"insufficient_scope\", scope=\"{scope}\""),
            ),
            Refusal::Limited(wait) => {
                let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                let mut r = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(serde_json::json!({
                        "error": format!("too many failed authentications from this address; retry in {secs} s")
                    })),
                )
                    .into_response();
                r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
                r.headers_mut()
                    .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                return r;
            }
            Refusal::Unavailable => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(serde_json::json!({
                        "error": "the API keys cannot be read (the OLTP database is unavailable)"
                    })),
                )
                    .into_response()
            }
        };
        let mut r = (status, Json(serde_json::json!({ "error": message }))).into_response();
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            r.headers_mut().insert(WWW_AUTHENTICATE, v);
        }
        r.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

#[derive(Debug, Deserialize)]
struct NextParam {
    next: Option<String>,
}

async fn login_form(State(g): State<Guard>, Query(q): Query<NextParam>) -> Response {
    g.login_page(StatusCode::OK, "", q.next.as_deref().unwrap_or("/"))
}

#[derive(Deserialize)]
struct LoginForm {
    key: String,
    next: Option<String>,
}

async fn login(State(g): State<Guard>, req: Request) -> Response {
    let peer = peer(&req);
    let headers = req.headers().clone();
    let Ok(Form(form)) = Form::<LoginForm>::from_request(req, &()).await else {
        return g.login_page(StatusCode::BAD_REQUEST, "Type the key into the form.", "/");
    };
    let next = safe_next(form.next.as_deref().unwrap_or("/"));
    let Some(scope) = g.0.cfg.page_scope else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if g.is_open() {
        return redirect(&next);
    }
    let mut with_key = HeaderMap::new();
    let bearer = format!("Bearer {}", form.key.trim());
    match HeaderValue::from_str(&bearer) {
        Ok(v) => {
            with_key.insert(AUTHORIZATION, v);
        }
        Err(_) => {
            with_key.insert(AUTHORIZATION, HeaderValue::from_static("Bearer -"));
        }
    }
    if let Some(f) = headers.get("x-forwarded-for") {
        with_key.insert("x-forwarded-for", f.clone());
    }
    match g.authorize(&with_key, peer, scope).await {
        Ok(principal) => {
            let token = g.0.sessions.open(principal.key_id, Instant::now());
            let cookie = session::set_cookie(
                &g.0.cookie,
                &token,
                g.0.sessions.ttl(),
                g.0.cfg.secure_cookies,
            );
            let mut r = redirect(&next);
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(SET_COOKIE, v);
            }
            r
        }
        Err(Refusal::Forbidden(scope)) => g.login_page(
            StatusCode::FORBIDDEN,
            &format!("This key may not open these pages: it needs the {scope} scope."),
            &next,
        ),
        Err(Refusal::Limited(wait)) => {
            let mut r = g.login_page(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed sign-ins from this address: wait a little and try again.",
                &next,
            );
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
            r
        }
        Err(Refusal::Unavailable) => g.login_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "The keys cannot be read right now (database unavailable).",
            &next,
        ),
        Err(Refusal::Unauthenticated { .. }) => g.login_page(
            StatusCode::UNAUTHORIZED,
            "That key is not valid (unknown, mistyped or revoked).",
            &next,
        ),
    }
}

async fn logout(State(g): State<Guard>, headers: HeaderMap) -> Response {
    for h in headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        if let Some(token) = session::cookie(h, &g.0.cookie) {
            g.0.sessions.close(token);
        }
    }
    let mut r = redirect("/login");
    let clear = session::clear_cookie(&g.0.cookie, g.0.cfg.secure_cookies);
    if let Ok(v) = HeaderValue::from_str(&clear) {
        r.headers_mut().insert(SET_COOKIE, v);
    }
    r
}

/// A local path to go to after login: anything else (another site, `//host`) is `/`.
fn safe_next(next: &str) -> String {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control());
    if local {
        next.to_owned()
    } else {
        "/".to_owned()
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(bearer(&v("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&v("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&v("Basic abc")), None);
        assert_eq!(bearer(&v("Bearer")), None);
    }

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(safe_next("/?from=2024-05-01"), "/?from=2024-05-01");
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/\\evil",
            "evil",
            "/\nx",
        ] {
            assert_eq!(safe_next(bad), "/", "{bad:?}");
        }
        assert_eq!(escape("\"><script>"), "&quot;&gt;&lt;script&gt;");
    }
}
