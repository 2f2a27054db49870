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

use crate::data::{DataError, UNIQUE_VIOLATION};
use crate::domain::catalog::CatalogError;
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
            ApiError::Request { status, .. } => *status,
            ApiError::Database(e) if is_unavailable(e) => StatusCode::SERVICE_UNAVAILABLE,
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

fn order_status(e: &OrderError) -> StatusCode {
    match e {
        OrderError::NotFound(_) => StatusCode::NOT_FOUND,
        OrderError::Transition { .. } => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

fn catalog_status(e: &CatalogError) -> StatusCode {
    match e {
        CatalogError::DuplicateEmail(_) | CatalogError::DuplicateProductName(_) => {
            StatusCode::CONFLICT
        }
        CatalogError::ProductNotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
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
                match status {
                    StatusCode::SERVICE_UNAVAILABLE => "database unavailable".to_owned(),
                    StatusCode::CONFLICT => "conflicts with an existing row".to_owned(),
                    _ => "internal error".to_owned(),
                }
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
                "request body is larger than {} bytes",
                crate::BODY_LIMIT_BYTES
            ),
        ),
        other => (other.status(), "could not read the request body".to_owned()),
    };
    ApiError::request(status, message)
}

/// Parses an order id from the path: a UUID, else 400.
pub(crate) fn parse_order_id(text: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(text).map_err(|_| {
        ApiError::request(
            StatusCode::BAD_REQUEST,
            format!("invalid order id {text:?}: expected a UUID"),
        )
    })
}

/// Parses a master-data id from the path: a positive integer, else 400.
pub(crate) fn parse_int_id(kind: &str, text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            ApiError::request(
                StatusCode::BAD_REQUEST,
                format!("invalid {kind} id {text:?}: expected a positive integer"),
            )
        })
}

/// `axum::extract::Path` whose rejection (e.g. invalid UTF-8 in a segment) is a JSON 400.
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
                StatusCode::BAD_REQUEST,
                format!("invalid path: {}", rejection.body_text()),
            )),
        }
    }
}
