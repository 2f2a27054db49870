//! `GET /stores`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::data::catalog as data;
use crate::domain::catalog::Store;
use crate::error::ApiError;
use crate::ApiState;

pub(crate) fn router() -> Router<ApiState> {
    Router::new().route("/stores", get(list_stores))
}

/// Every store.
#[utoipa::path(
    get, path = "/stores", tag = "stores",
    responses((status = 200, description = "Stores by id", body = [Store]))
)]
pub async fn list_stores(State(state): State<ApiState>) -> Result<Json<Vec<Store>>, ApiError> {
    Ok(Json(data::list_stores(&state.pool).await?))
}
