//! `POST /customers` (alias `POST /customers/new`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};

use crate::data::catalog as data;
use crate::domain::catalog::{Customer, NewCustomer};
use crate::error::{ApiError, ApiJson, ErrorBody};
use crate::ApiState;

pub(crate) fn router() -> Router<ApiState> {
    Router::new()
        .route("/customers", post(create_customer))
        .route("/customers/new", post(create_customer_alias))
}

/// Registers a customer; emails are unique, case-insensitively.
#[utoipa::path(
    post, path = "/customers", tag = "customers",
    request_body = NewCustomer,
    responses(
        (status = 201, description = "Customer created", body = Customer),
        (status = 409, description = "The email is taken", body = ErrorBody),
        (status = 422, description = "Blank name or invalid email", body = ErrorBody),
    )
)]
pub async fn create_customer(
    State(state): State<ApiState>,
    ApiJson(req): ApiJson<NewCustomer>,
) -> Result<(StatusCode, Json<Customer>), ApiError> {
    let new = req.validate()?;
    let customer = data::create_customer(&state.pool, &new).await?;
    Ok((StatusCode::CREATED, Json(customer)))
}

/// Alias of `POST /customers`, kept from the original API.
#[utoipa::path(
    post, path = "/customers/new", tag = "customers",
    request_body = NewCustomer,
    responses(
        (status = 201, description = "Customer created", body = Customer),
        (status = 409, description = "The email is taken", body = ErrorBody),
        (status = 422, description = "Blank name or invalid email", body = ErrorBody),
    )
)]
pub async fn create_customer_alias(
    state: State<ApiState>,
    req: ApiJson<NewCustomer>,
) -> Result<(StatusCode, Json<Customer>), ApiError> {
    create_customer(state, req).await
}
