//! Writes to the source whatever its schema has become: tables and columns known by identity
//! (relation oid, attnum) and named as they are now, values cast to their types now.

use std::collections::HashMap;

use sqlx::PgConnection;

/// The columns of the coffee tables, as the star reads them (key first) — and the others a
/// write needs.
pub const TABLES: &[(&str, &[&str])] = &[
    ("stores", &["id", "name", "city", "opened_on"]),
    (
        "employees",
        &["id", "name", "role", "store_id", "active", "hired_on"],
    ),
    ("customers", &["id", "name", "email", "created_at"]),
    (
        "products",
        &[
            "id",
            "name",
            "category",
            "price",
            "is_available",
            "description",
            "updated_at",
        ],
    ),
    (
        "orders",
        &[
            "id",
            "customer_id",
            "employee_id",
            "store_id",
            "status",
            "payment_method",
            "ordered_at",
            "updated_at",
            "total",
        ],
    ),
    (
        "order_items",
        &["id", "order_id", "product_id", "quantity", "unit_price"],
    ),
    (
        "payments",
        &["id", "order_id", "amount", "method", "paid_at"],
    ),
    (
        "inventory_movements",
        &[
            "id",
            "store_id",
            "product_id",
            "order_id",
            "delta",
            "reason",
            "occurred_at",
        ],
    ),
];

/// Every column that feeds the star, retyped: (table, column, new type). Int keys and ids
/// narrow (held), text widens, numbers widen or go through text, times lose or gain their
/// zone, booleans, uuids and one amount become text (read value by value).
pub const RETYPES: &[(&str, &str, &str)] = &[
    ("stores", "id", "integer"),
    ("stores", "name", "varchar(300)"),
    ("stores", "city", "varchar(100)"),
    ("stores", "opened_on", "timestamp"),
    ("employees", "id", "integer"),
    ("employees", "name", "varchar(300)"),
    ("employees", "role", "varchar(50)"),
    ("employees", "store_id", "integer"),
    ("employees", "active", "text"),
    ("employees", "hired_on", "text"),
    ("customers", "id", "integer"),
    ("customers", "name", "varchar(300)"),
    ("customers", "email", "varchar(320)"),
    ("customers", "created_at", "timestamp"),
    ("products", "id", "integer"),
    ("products", "name", "varchar(300)"),
    ("products", "category", "varchar(100)"),
    ("products", "price", "numeric(12,3)"),
    ("products", "is_available", "text"),
    ("orders", "id", "text"),
    ("orders", "customer_id", "integer"),
    ("orders", "employee_id", "integer"),
    ("orders", "store_id", "integer"),
    ("orders", "status", "varchar(20)"),
    ("orders", "payment_method", "varchar(20)"),
    ("orders", "ordered_at", "timestamp"),
    ("order_items", "id", "integer"),
    ("order_items", "order_id", "text"),
    ("order_items", "product_id", "integer"),
    ("order_items", "quantity", "numeric(10,2)"),
    ("order_items", "unit_price", "double precision"),
    ("payments", "id", "integer"),
    ("payments", "order_id", "text"),
    ("payments", "amount", "text"),
    ("payments", "method", "varchar(20)"),
    ("payments", "paid_at", "date"),
    ("inventory_movements", "id", "integer"),
    ("inventory_movements", "store_id", "integer"),
    ("inventory_movements", "product_id", "integer"),
    ("inventory_movements", "delta", "numeric(8,1)"),
    ("inventory_movements", "reason", "varchar(20)"),
    ("inventory_movements", "occurred_at", "timestamp"),
];

pub async fn exec(c: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(sql)
        .execute(c)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"));
}

/// The source's tables and columns by identity (relation oid, attnum), whatever their names
/// are now: writes name columns as they were first called.
pub struct Source {
    oids: HashMap<&'static str, i64>,
    attnums: HashMap<(&'static str, &'static str), i16>,
    pub customers: Vec<i64>,
    staff: Vec<(i64, i64)>,
    products: Vec<(i64, String)>,
    pub orders: Vec<String>,
    n: u64,
}

impl Source {
    pub async fn capture(c: &mut PgConnection) -> Self {
        let mut oids = HashMap::new();
        let mut attnums = HashMap::new();
        for (t, cols) in TABLES {
            let oid: i64 = sqlx::query_scalar("select $1::regclass::oid::bigint")
                .bind(*t)
                .fetch_one(&mut *c)
                .await
                .unwrap();
            oids.insert(*t, oid);
            for col in *cols {
                let n: i16 = sqlx::query_scalar(
                    "select attnum from pg_attribute where attrelid = $1::oid and attname = $2",
                )
                .bind(oid)
                .bind(*col)
                .fetch_one(&mut *c)
                .await
                .unwrap();
                attnums.insert((*t, *col), n);
            }
        }
        let customers = sqlx::query_scalar("select id from customers order by id limit 50")
            .fetch_all(&mut *c)
            .await
            .unwrap();
        let staff = sqlx::query_as(
            "select id, store_id from employees where active and store_id is not null order by id",
        )
        .fetch_all(&mut *c)
        .await
        .unwrap();
        let products = sqlx::query_as("select id, price::text from products order by id limit 12")
            .fetch_all(&mut *c)
            .await
            .unwrap();
        Self {
            oids,
            attnums,
            customers,
            staff,
            products,
            orders: Vec::new(),
            n: 0,
        }
    }

    /// The table's name now (None: dropped).
    async fn table(&self, c: &mut PgConnection, t: &str) -> Option<String> {
        sqlx::query_scalar("select format('%I.%I', relnamespace::regnamespace, relname) from pg_class where oid = $1::oid")
            .bind(self.oids[t])
            .fetch_optional(c)
            .await
            .unwrap()
    }

    /// A column's name and type now (None: dropped).
    pub async fn column(
        &self,
        c: &mut PgConnection,
        t: &str,
        col: &str,
    ) -> Option<(String, String)> {
        sqlx::query_as(
            "select attname::text, format_type(atttypid, atttypmod) from pg_attribute
             where attrelid = $1::oid and attnum = $2 and not attisdropped",
        )
        .bind(self.oids[t])
        .bind(self.attnums[&(t, col)])
        .fetch_optional(c)
        .await
        .unwrap()
    }

    /// `(name now, value as text cast to its type now)` of each column still there.
    async fn present(
        &self,
        c: &mut PgConnection,
        t: &str,
        values: &[(&str, String)],
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (col, v) in values {
            if let Some((name, ty)) = self.column(c, t, col).await {
                let v = v.replace('\'', "''");
                out.push((format!("\"{name}\""), format!("'{v}'::text::{ty}")));
            }
        }
        out
    }

    /// 1.5 when `fraction` and the column is numeric now, else 2.
    async fn number(&self, c: &mut PgConnection, t: &str, col: &str, fraction: bool) -> String {
        let numeric = self
            .column(c, t, col)
            .await
            .is_some_and(|(_, ty)| ty.starts_with("numeric"));
        if fraction && numeric { "1.5" } else { "2" }.to_owned()
    }

    /// Inserts a row of `t` with the values of the columns still there; its key as text.
    pub async fn insert(
        &self,
        c: &mut PgConnection,
        t: &str,
        values: &[(&str, String)],
    ) -> Option<String> {
        let table = self.table(c, t).await?;
        let cols = self.present(c, t, values).await;
        let key = self.column(c, t, "id").await;
        let returning = key
            .as_ref()
            .map(|(k, _)| format!(" returning \"{k}\"::text"))
            .unwrap_or_default();
        let sql = if cols.is_empty() {
            format!("insert into {table} default values{returning}")
        } else {
            format!(
                "insert into {table} ({}) values ({}){returning}",
                cols.iter()
                    .map(|c| c.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                cols.iter()
                    .map(|c| c.1.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        if key.is_some() {
            sqlx::query_scalar(&sql)
                .fetch_one(&mut *c)
                .await
                .unwrap_or_else(|e| panic!("{e}: {sql}"))
        } else {
            exec(c, &sql).await;
            None
        }
    }

    /// Updates the row of `t` whose key is `key` (nothing when the key or table is gone).
    async fn update(&self, c: &mut PgConnection, t: &str, key: &str, values: &[(&str, String)]) {
        let (Some(table), Some((k, _))) = (self.table(c, t).await, self.column(c, t, "id").await)
        else {
            return;
        };
        let cols = self.present(c, t, values).await;
        if cols.is_empty() {
            return;
        }
        let sets: Vec<String> = cols.iter().map(|(n, v)| format!("{n} = {v}")).collect();
        let sql = format!(
            "update {table} set {} where \"{k}\"::text = '{key}'",
            sets.join(", ")
        );
        exec(c, &sql).await;
    }

    /// One round of writes: a customer added and one changed, an order with two lines, a
    /// payment and stock movements, an earlier order moved on, a price changed, and now and
    /// then a store with an employee.
    pub async fn round(&mut self, c: &mut PgConnection) {
        self.n += 1;
        let n = self.n;
        let s = |v: &dyn ToString| v.to_string();
        let customer = self
            .insert(
                c,
                "customers",
                &[
                    ("name", format!("Guest {n}")),
                    ("email", format!("guest{n}@example.com")),
                ],
            )
            .await;
        let old = self.customers[(n as usize * 7) % self.customers.len()];
        self.update(
            c,
            "customers",
            &s(&old),
            &[("name", format!("Regular {n}"))],
        )
        .await;
        let (employee, store) = self.staff[n as usize % self.staff.len()];
        let customer_id = customer
            .filter(|_| !n.is_multiple_of(3))
            .unwrap_or_else(|| s(&self.customers[n as usize % self.customers.len()]));
        let order: String = sqlx::query_scalar("select gen_random_uuid()::text")
            .fetch_one(&mut *c)
            .await
            .unwrap();
        self.insert(
            c,
            "orders",
            &[
                ("id", order.clone()),
                ("customer_id", customer_id),
                ("employee_id", s(&employee)),
                ("store_id", s(&store)),
                ("status", "placed".into()),
                ("payment_method", "card".into()),
                ("total", "0".into()),
            ],
        )
        .await;
        let mut amount = 0.0;
        for k in 0..2u64 {
            let (product, price) = &self.products[((n * 2 + k) as usize) % self.products.len()];
            // A fraction where the column takes one.
            let fraction = k == 1;
            let quantity = self.number(c, "order_items", "quantity", fraction).await;
            let delta = self
                .number(c, "inventory_movements", "delta", fraction)
                .await;
            amount += price.parse::<f64>().unwrap_or(1.0) * quantity.parse::<f64>().unwrap();
            self.insert(
                c,
                "order_items",
                &[
                    ("order_id", order.clone()),
                    ("product_id", s(product)),
                    ("quantity", quantity.clone()),
                    ("unit_price", price.clone()),
                ],
            )
            .await;
            self.insert(
                c,
                "inventory_movements",
                &[
                    ("store_id", s(&store)),
                    ("product_id", s(product)),
                    ("order_id", order.clone()),
                    ("delta", format!("-{delta}")),
                    ("reason", "sale".into()),
                ],
            )
            .await;
        }
        self.insert(
            c,
            "payments",
            &[
                ("order_id", order.clone()),
                ("amount", format!("{amount:.2}")),
                ("method", "card".into()),
            ],
        )
        .await;
        if let Some(earlier) = self.orders.last().cloned() {
            self.update(c, "orders", &earlier, &[("status", "ready".into())])
                .await;
        }
        self.orders.push(order);
        let (product, _) = &self.products[n as usize % self.products.len()];
        self.update(
            c,
            "products",
            &s(product),
            &[("price", format!("{}.{:02}", 3 + n % 4, n % 100))],
        )
        .await;
        if n.is_multiple_of(5) {
            let store = self
                .insert(
                    c,
                    "stores",
                    &[("name", format!("Kiosk {n}")), ("city", "Lyon".into())],
                )
                .await;
            if let Some(store) = store {
                self.insert(
                    c,
                    "employees",
                    &[
                        ("name", format!("Barista {n}")),
                        ("store_id", store.clone()),
                        ("active", "true".into()),
                    ],
                )
                .await;
            }
        }
    }
}
