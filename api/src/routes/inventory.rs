//! `POST /inventory/restock`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};

use crate::data::catalog as data;
use crate::domain::catalog::{InventoryMovement, Restock};
use crate::error::{ApiError, ApiJson, ErrorBody};
use crate::ApiState;

pub(crate) fn router() -> Router<ApiState> {
    Router::new().route("/inventory/restock", post(restock))
}

/// Records a delivery: one `restock` inventory movement of +quantity.
#[utoipa::path(
    post, path = "/inventory/restock", tag = "inventory",
    request_body = Restock,
    responses(
        (status = 201, description = "Movement recorded", body = InventoryMovement),
        (status = 404, description = "Unknown store or product", body = ErrorBody),
        (status = 422, description = "Quantity out of range", body = ErrorBody),
    )
)]
pub async fn restock(
    State(state): State<ApiState>,
    ApiJson(req): ApiJson<Restock>,
) -> Result<(StatusCode, Json<InventoryMovement>), ApiError> {
    let movement = data::restock(&state.pool, &req).await?;
    Ok((StatusCode::CREATED, Json(movement)))
}
