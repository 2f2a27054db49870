//! Master data and restocks. Each write is one statement; unique and foreign-key violations
//! become the domain's conflict and unknown-reference errors, so the database stays the one
//! judge of uniqueness (no check-then-insert race).

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::{
    violated_constraint, with_statements, DataError, FOREIGN_KEY_VIOLATION, UNIQUE_VIOLATION,
};
use crate::domain::catalog::{
    CatalogError, Customer, Employee, InventoryMovement, NewCustomer, NewEmployee, NewProduct,
    Product, ProductPatch, Restock, Store,
};

// Numbers are read as the types the API serves, so a widened source column changes nothing.
const PRODUCT_COLUMNS: &str = "id::int8 as id, name, category, price::numeric as price, \
     is_available, description, updated_at";
const EMPLOYEE_COLUMNS: &str =
    "id::int8 as id, name, role, store_id::int8 as store_id, active, hired_on";

/// Inserts a validated customer; a duplicate email (case-insensitive) is a conflict.
pub async fn create_customer(pool: &PgPool, new: &NewCustomer) -> Result<Customer, DataError> {
    let row = with_statements!(pool, |conn| async {
        sqlx::query(
            "insert into customers (name, email) values ($1, $2)
             returning id::int8 as id, name, email, created_at",
        )
        .bind(&new.name)
        .bind(&new.email)
        .fetch_one(conn)
        .await
        .map_err(|e| match violated_constraint(&e, UNIQUE_VIOLATION) {
            Some("customers_email_key") => CatalogError::DuplicateEmail(new.email.clone()).into(),
            _ => DataError::from(e),
        })
    })?;
    Ok(Customer {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Inserts a validated product; a duplicate name is a conflict.
pub async fn create_product(pool: &PgPool, new: &NewProduct) -> Result<Product, DataError> {
    let sql = format!(
        "insert into products (name, category, price, is_available, description)
         values ($1, $2, $3, $4, $5) returning {PRODUCT_COLUMNS}"
    );
    let row = with_statements!(pool, |conn| async {
        sqlx::query(&sql)
            .bind(&new.name)
            .bind(&new.category)
            .bind(new.price)
            .bind(new.is_available)
            .bind(&new.description)
            .fetch_one(conn)
            .await
            .map_err(|e| product_conflict(e, &new.name))
    })?;
    Ok(product_from_row(&row)?)
}

/// Applies a validated patch; fields left `None` keep their value.
pub async fn update_product(
    pool: &PgPool,
    id: i64,
    patch: &ProductPatch,
) -> Result<Product, DataError> {
    let sql = format!(
        "update products set
             name = coalesce($2, name),
             category = coalesce($3, category),
             price = coalesce($4, price),
             is_available = coalesce($5, is_available),
             updated_at = now()
         where id = $1
         returning {PRODUCT_COLUMNS}"
    );
    let row = with_statements!(pool, |conn| async {
        sqlx::query(&sql)
            .bind(id)
            .bind(&patch.name)
            .bind(&patch.category)
            .bind(patch.price)
            .bind(patch.is_available)
            .fetch_optional(conn)
            .await
            .map_err(|e| product_conflict(e, patch.name.as_deref().unwrap_or_default()))
    })?
    .ok_or(CatalogError::ProductNotFound(id))?;
    Ok(product_from_row(&row)?)
}

fn product_conflict(err: sqlx::Error, name: &str) -> DataError {
    match violated_constraint(&err, UNIQUE_VIOLATION) {
        Some("products_name_key") => CatalogError::DuplicateProductName(name.to_owned()).into(),
        _ => DataError::from(err),
    }
}

fn product_from_row(row: &PgRow) -> Result<Product, sqlx::Error> {
    Ok(Product {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        category: row.try_get("category")?,
        price: row.try_get("price")?,
        is_available: row.try_get("is_available")?,
        description: row.try_get("description")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Inserts a validated employee; an unknown `store_id` is refused by the foreign key.
pub async fn create_employee(pool: &PgPool, new: &NewEmployee) -> Result<Employee, DataError> {
    let sql = format!(
        "insert into employees (name, role, store_id, active) values ($1, $2, $3, $4)
         returning {EMPLOYEE_COLUMNS}"
    );
    let row = with_statements!(pool, |conn| async {
        sqlx::query(&sql)
            .bind(&new.name)
            .bind(new.role.as_deref().unwrap_or("barista"))
            .bind(new.store_id)
            .bind(new.active)
            .fetch_one(conn)
            .await
            .map_err(|e| match violated_constraint(&e, FOREIGN_KEY_VIOLATION) {
                Some("employees_store_id_fkey") => {
                    CatalogError::UnknownStore(new.store_id.unwrap_or_default()).into()
                }
                _ => DataError::from(e),
            })
    })?;
    Ok(employee_from_row(&row)?)
}

/// Every active employee, by id.
pub async fn active_employees(pool: &PgPool) -> Result<Vec<Employee>, DataError> {
    let sql = format!("select {EMPLOYEE_COLUMNS} from employees where active order by id");
    let rows = with_statements!(pool, |conn| async {
        Ok(sqlx::query(&sql).fetch_all(conn).await?)
    })?;
    Ok(rows
        .iter()
        .map(employee_from_row)
        .collect::<Result<_, _>>()?)
}

fn employee_from_row(row: &PgRow) -> Result<Employee, sqlx::Error> {
    Ok(Employee {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: row.try_get("role")?,
        store_id: row.try_get("store_id")?,
        active: row.try_get("active")?,
        hired_on: row.try_get("hired_on")?,
    })
}

/// Every store, by id.
pub async fn list_stores(pool: &PgPool) -> Result<Vec<Store>, DataError> {
    let rows = with_statements!(pool, |conn| async {
        Ok(
            sqlx::query("select id::int8 as id, name, city, opened_on from stores order by id")
                .fetch_all(conn)
                .await?,
        )
    })?;
    rows.iter()
        .map(|row| {
            Ok(Store {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                city: row.try_get("city")?,
                opened_on: row.try_get("opened_on")?,
            })
        })
        .collect()
}

/// Writes one `restock` movement (delta = +quantity).
pub async fn restock(pool: &PgPool, req: &Restock) -> Result<InventoryMovement, DataError> {
    let delta = req.delta()?;
    let row = with_statements!(pool, |conn| async {
        sqlx::query(
            "insert into inventory_movements (store_id, product_id, delta, reason)
             values ($1, $2, $3, 'restock')
             returning id::int8 as id, store_id::int8 as store_id,
                       product_id::int8 as product_id, delta::int4 as delta, reason, occurred_at",
        )
        .bind(req.store_id)
        .bind(req.product_id)
        .bind(delta)
        .fetch_one(conn)
        .await
        .map_err(|e| match violated_constraint(&e, FOREIGN_KEY_VIOLATION) {
            Some("inventory_movements_store_id_fkey") => {
                CatalogError::UnknownStore(req.store_id).into()
            }
            Some("inventory_movements_product_id_fkey") => {
                CatalogError::UnknownProduct(req.product_id).into()
            }
            _ => DataError::from(e),
        })
    })?;
    Ok(InventoryMovement {
        id: row.try_get("id")?,
        store_id: row.try_get("store_id")?,
        product_id: row.try_get("product_id")?,
        delta: row.try_get("delta")?,
        reason: row.try_get("reason")?,
        occurred_at: row.try_get("occurred_at")?,
    })
}
