//! `POST /events`: menu impressions and clicks.

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;

use crate::data::events as data;
use crate::domain::event::{check_batch, Accepted, EventBatch, EVENTS_BODY_LIMIT_BYTES};
use crate::error::{ApiError, ApiJson, ErrorBody};
use crate::ApiState;

pub(crate) fn router() -> Router<ApiState> {
    Router::new().route(
        "/events",
        post(post_events).layer(DefaultBodyLimit::max(EVENTS_BODY_LIMIT_BYTES)),
    )
}

/// Takes one event or an array of up to 100 (`impression` or `click` of a product in a
/// session), all or none. 202 once they are stored (the OLTP table `click_events`) or, with
/// NATS, acknowledged by JetStream; they reach OLAP's facts through the loader.
#[utoipa::path(
    post, path = "/events", tag = "events",
    request_body = EventBatch,
    responses(
        (status = 202, description = "Accepted: the events' ids, in order", body = Accepted),
        (status = 409, description = "An occurred_at more than 5 minutes ahead of the server's \
            clock, or older than the allowed lateness (24 hours)", body = ErrorBody),
        (status = 422, description = "Invalid events: fields, batch size, context",
            body = ErrorBody),
        (status = 429, description = "More events per second than the API accepts",
            body = ErrorBody),
    )
)]
pub async fn post_events(
    State(state): State<ApiState>,
    ApiJson(batch): ApiJson<EventBatch>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let events = check_batch(batch, Utc::now())?;
    state.events.admit(events.len())?;
    match &state.events.publisher {
        Some(p) => p.publish(&events).await.map_err(ApiError::EventStream)?,
        None => data::insert_events(&state.pool, &events).await?,
    }
    let ids = events.iter().map(|e| e.id).collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            accepted: events.len(),
            ids,
        }),
    ))
}
