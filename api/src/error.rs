//! The API's one error type and the extractors that turn axum's rejections into it, so every
//! failure — ours or the framework's — is `{"error": "..."}` JSON with a fitting status.
//! Database error text is logged, never sent.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

use crate::data::{schema_drift, DataError, UNIQUE_VIOLATION};
use crate::domain::catalog::CatalogError;
use crate::domain::event::EventError;
use crate::domain::order::OrderError;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a human.
    pub error: String,
}

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Order(#[from] OrderError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Event(#[from] EventError),
    /// The event stream did not take the events (nothing was accepted); its reason is logged.
    #[error("the event stream is unavailable; retry later")]
    EventStream(String),
    /// A request the framework could not take apart (JSON, path, size, route).
    #[error("{message}")]
    Request { status: StatusCode, message: String },
    /// A database failure: logged with its text, answered with a generic message.
    #[error("internal error")]
    Database(#[source] sqlx::Error),
}

impl ApiError {
    pub fn request(status: StatusCode, message: impl Into<String>) -> Self {
        Self::Request {
            status,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Order(e) => order_status(e),
            ApiError::Catalog(e) => catalog_status(e),
            ApiError::Event(EventError::RateLimited(_)) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Event(EventError::Future { .. } | EventError::TooLate { .. }) => {
                StatusCode::CONFLICT
            }
            ApiError::Event(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::EventStream(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Request { status, .. } => *status,
            ApiError::Database(e) if is_unavailable(e) || schema_drift(e).is_some() => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Database(e)
                if e.as_database_error().and_then(|d| d.code()).as_deref()
                    == Some(UNIQUE_VIOLATION) =>
            {
                StatusCode::CONFLICT
            }
            ApiError::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A request the OpenAPI schema allows may still name a row that does not exist (404, as for a
/// missing resource in the path) or one whose state forbids it (409); 422 is kept for what the
/// schema itself refuses.
fn order_status(e: &OrderError) -> StatusCode {
    match e {
        OrderError::NotFound(_)
        | OrderError::UnknownProduct(_)
        | OrderError::UnknownCustomer(_)
        | OrderError::UnknownEmployee(_)
        | OrderError::UnknownStore(_) => StatusCode::NOT_FOUND,
        OrderError::Transition { .. }
        | OrderError::UnavailableProduct(_)
        | OrderError::InactiveEmployee(_)
        | OrderError::DuplicateChange(_) => StatusCode::CONFLICT,
        OrderError::NoItems
        | OrderError::TooManyItems(_)
        | OrderError::Quantity { .. }
        | OrderError::UnknownStatus(_)
        | OrderError::Session => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

fn catalog_status(e: &CatalogError) -> StatusCode {
    match e {
        CatalogError::DuplicateEmail(_) | CatalogError::DuplicateProductName(_) => {
            StatusCode::CONFLICT
        }
        CatalogError::ProductNotFound(_)
        | CatalogError::UnknownProduct(_)
        | CatalogError::UnknownStore(_) => StatusCode::NOT_FOUND,
        CatalogError::Field(_)
        | CatalogError::Price(_)
        | CatalogError::NothingToUpdate
        | CatalogError::RestockQuantity(_) => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

fn is_unavailable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
    )
}

impl From<DataError> for ApiError {
    fn from(e: DataError) -> Self {
        match e {
            DataError::Order(e) => ApiError::Order(e),
            DataError::Catalog(e) => ApiError::Catalog(e),
            DataError::Database(e) => ApiError::Database(e),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Database(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Database(e) => {
                tracing::error!(error = %e, status = status.as_u16(), "database error");
                match (status, schema_drift(e)) {
                    (_, Some(drift)) => drift,
                    (StatusCode::SERVICE_UNAVAILABLE, None) => "database unavailable".to_owned(),
                    (StatusCode::CONFLICT, None) => "conflicts with an existing row".to_owned(),
                    _ => "internal error".to_owned(),
                }
            }
            ApiError::EventStream(reason) => {
                tracing::error!(error = %reason, "publishing events failed");
                self.to_string()
            }
            other => other.to_string(),
        };
        (status, Json(ErrorBody { error: message })).into_response()
    }
}

/// `axum::Json` with our error bodies: malformed JSON is 400, a body that does not fit the
/// type (missing field, wrong type, unknown field) is 422 naming the field, a body over the
/// limit is 413, a missing `Content-Type: application/json` is 415.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let detail = std::error::Error::source(&rejection)
        .map(ToString::to_string)
        .unwrap_or_else(|| rejection.body_text());
    let (status, message) = match &rejection {
        JsonRejection::JsonDataError(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid request body: {detail}"),
        ),
        JsonRejection::JsonSyntaxError(_) => {
            (StatusCode::BAD_REQUEST, format!("malformed JSON: {detail}"))
        }
        JsonRejection::MissingJsonContentType(_) => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected a request with Content-Type: application/json".to_owned(),
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body is larger than {} bytes ({} for POST /events)",
                crate::BODY_LIMIT_BYTES,
                crate::domain::event::EVENTS_BODY_LIMIT_BYTES
            ),
        ),
        other => (other.status(), "could not read the request body".to_owned()),
    };
    ApiError::request(status, message)
}

/// Parses an order id from the path: a UUID, else 404 — a path that cannot name an order
/// names none (and a client that followed a wrong link learns the same as for a deleted one).
pub(crate) fn parse_order_id(text: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(text).map_err(|_| {
        ApiError::request(
            StatusCode::NOT_FOUND,
            format!("order {text:?} not found: order ids are UUIDs"),
        )
    })
}

/// Parses a master-data id from the path: a positive integer, else 404 (as for order ids). As
/// in JSON Schema, a whole number written as a float (`7.0`, `1e3`) is that integer.
pub(crate) fn parse_int_id(kind: &str, text: &str) -> Result<i64, ApiError> {
    let whole_float = || {
        text.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e18)
            .map(|v| v as i64)
    };
    text.parse::<i64>()
        .ok()
        .or_else(whole_float)
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            ApiError::request(
                StatusCode::NOT_FOUND,
                format!("{kind} {text:?} not found: {kind} ids are positive integers"),
            )
        })
}

/// `axum::extract::Path` whose rejection (e.g. invalid UTF-8 in a segment) is a JSON 404, as
/// for any path that cannot name a resource.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::request(
                StatusCode::NOT_FOUND,
                format!("no such resource: {}", rejection.body_text()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_ids_are_positive_integers_however_written() {
        assert_eq!(parse_int_id("product", "7").unwrap(), 7);
        assert_eq!(parse_int_id("product", "7.0").unwrap(), 7);
        assert_eq!(parse_int_id("product", "1e3").unwrap(), 1000);
        for bad in ["0", "-1", "7.5", "x", "", "inf", "NaN", "1e300"] {
            let e = parse_int_id("product", bad).unwrap_err();
            assert_eq!(e.status(), StatusCode::NOT_FOUND, "{bad}");
        }
    }
}
