//! `POST /products` (alias `POST /products/new`), `PATCH /products/{id}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{patch, post};
use axum::{Json, Router};

use crate::data::catalog as data;
use crate::domain::catalog::{NewProduct, Product, ProductPatch};
use crate::error::{parse_int_id, ApiError, ApiJson, ApiPath, ErrorBody};
use crate::ApiState;

pub(crate) fn router() -> Router<ApiState> {
    Router::new()
        .route("/products", post(create_product))
        .route("/products/new", post(create_product_alias))
        .route("/products/{id}", patch(update_product))
}

/// Adds a product to the menu. `price` is a decimal string or number, > 0, at most two
/// decimals, at most 10000.
#[utoipa::path(
    post, path = "/products", tag = "products",
    request_body = NewProduct,
    responses(
        (status = 201, description = "Product created", body = Product),
        (status = 409, description = "A product with this name exists", body = ErrorBody),
        (status = 422, description = "Invalid name, category or price", body = ErrorBody),
    )
)]
pub async fn create_product(
    State(state): State<ApiState>,
    ApiJson(req): ApiJson<NewProduct>,
) -> Result<(StatusCode, Json<Product>), ApiError> {
    let new = req.validate()?;
    let product = data::create_product(&state.pool, &new).await?;
    Ok((StatusCode::CREATED, Json(product)))
}

/// Alias of `POST /products`, kept from the original API.
#[utoipa::path(
    post, path = "/products/new", tag = "products",
    request_body = NewProduct,
    responses(
        (status = 201, description = "Product created", body = Product),
        (status = 409, description = "A product with this name exists", body = ErrorBody),
        (status = 422, description = "Invalid name, category or price", body = ErrorBody),
    )
)]
pub async fn create_product_alias(
    state: State<ApiState>,
    req: ApiJson<NewProduct>,
) -> Result<(StatusCode, Json<Product>), ApiError> {
    create_product(state, req).await
}

/// Changes any of name, category, price, is_available.
#[utoipa::path(
    patch, path = "/products/{id}", tag = "products",
    params(("id" = i64, Path, minimum = 1, description = "Product id")),
    request_body = ProductPatch,
    responses(
        (status = 200, description = "The updated product", body = Product),
        (status = 404, description = "Unknown product (or not a positive integer)",
            body = ErrorBody),
        (status = 409, description = "A product with this name exists", body = ErrorBody),
        (status = 422, description = "Invalid, null or no field", body = ErrorBody),
    )
)]
pub async fn update_product(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ProductPatch>,
) -> Result<Json<Product>, ApiError> {
    let id = parse_int_id("product", &id)?;
    let patch = req.validate()?;
    Ok(Json(data::update_product(&state.pool, id, &patch).await?))
}
