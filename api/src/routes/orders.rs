//! `POST /orders` (alias `POST /orders/new`), `GET|PATCH|DELETE /orders/{id}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{SubsecRound, Utc};

use crate::data::orders as data;
use crate::domain::order::{NewOrder, Order, OrderDraft, OrderStatus, StatusUpdate};
use crate::error::{parse_order_id, ApiError, ApiJson, ApiPath, ErrorBody};
use crate::ApiState;

pub(crate) fn router() -> Router<ApiState> {
    Router::new()
        .route("/orders", post(create_order))
        .route("/orders/new", post(create_order_alias))
        .route(
            "/orders/{id}",
            get(get_order)
                .patch(update_order_status)
                .delete(delete_order),
        )
}

/// Places an order in one transaction: prices are read from the products inside it, the
/// total is computed server-side, a payment and one `sale` inventory movement per item are
/// written with it.
#[utoipa::path(
    post, path = "/orders", tag = "orders",
    request_body = NewOrder,
    responses(
        (status = 201, description = "Order placed", body = Order),
        (status = 404, description = "Unknown customer, employee, store or product",
            body = ErrorBody),
        (status = 409, description = "Unavailable product or inactive employee", body = ErrorBody),
        (status = 422, description = "Invalid order: fields, items, quantities", body = ErrorBody),
    )
)]
pub async fn create_order(
    State(state): State<ApiState>,
    ApiJson(req): ApiJson<NewOrder>,
) -> Result<(StatusCode, Json<Order>), ApiError> {
    let draft = OrderDraft::new(req, Utc::now())?;
    let order = data::place_order(&state.pool, draft).await?;
    Ok((StatusCode::CREATED, Json(order)))
}

/// Alias of `POST /orders`, kept from the original API.
#[utoipa::path(
    post, path = "/orders/new", tag = "orders",
    request_body = NewOrder,
    responses(
        (status = 201, description = "Order placed", body = Order),
        (status = 404, description = "Unknown customer, employee, store or product",
            body = ErrorBody),
        (status = 409, description = "Unavailable product or inactive employee", body = ErrorBody),
        (status = 422, description = "Invalid order: fields, items, quantities", body = ErrorBody),
    )
)]
pub async fn create_order_alias(
    state: State<ApiState>,
    req: ApiJson<NewOrder>,
) -> Result<(StatusCode, Json<Order>), ApiError> {
    create_order(state, req).await
}

/// One order with its items.
#[utoipa::path(
    get, path = "/orders/{id}", tag = "orders",
    params(("id" = uuid::Uuid, Path, description = "Order id")),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 404, description = "Unknown order (or not a UUID)", body = ErrorBody),
    )
)]
pub async fn get_order(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Order>, ApiError> {
    let id = parse_order_id(&id)?;
    Ok(Json(data::get_order(&state.pool, id).await?))
}

/// Moves an order along placed → preparing → ready → completed, or cancels it from placed
/// or preparing (writing compensating `cancel` inventory movements).
#[utoipa::path(
    patch, path = "/orders/{id}", tag = "orders",
    params(("id" = uuid::Uuid, Path, description = "Order id")),
    request_body = StatusUpdate,
    responses(
        (status = 200, description = "The updated order", body = Order),
        (status = 404, description = "Unknown order (or not a UUID)", body = ErrorBody),
        (status = 409, description = "Transition not allowed", body = ErrorBody),
        (status = 422, description = "Not a status an order can be moved to", body = ErrorBody),
    )
)]
pub async fn update_order_status(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<StatusUpdate>,
) -> Result<Json<Order>, ApiError> {
    let id = parse_order_id(&id)?;
    let status = OrderStatus::from(req.status);
    let order = data::set_status(&state.pool, id, status, Utc::now().trunc_subsecs(6)).await?;
    Ok(Json(order))
}

/// Deletes an order; its items, payment and inventory movements go with it.
#[utoipa::path(
    delete, path = "/orders/{id}", tag = "orders",
    params(("id" = uuid::Uuid, Path, description = "Order id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "Unknown order (or not a UUID)", body = ErrorBody),
    )
)]
pub async fn delete_order(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_order_id(&id)?;
    data::delete_order(&state.pool, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
