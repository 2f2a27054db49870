//! `POST /employees`, `GET /employees/active`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::data::catalog as data;
use crate::domain::catalog::{Employee, NewEmployee};
use crate::error::{ApiError, ApiJson, ErrorBody};
use crate::ApiState;

pub(crate) fn router() -> Router<ApiState> {
    Router::new()
        .route("/employees", post(create_employee))
        .route("/employees/active", get(active_employees))
}

/// Hires an employee (role defaults to barista, active to true).
#[utoipa::path(
    post, path = "/employees", tag = "employees",
    request_body = NewEmployee,
    responses(
        (status = 201, description = "Employee created", body = Employee),
        (status = 404, description = "Unknown store", body = ErrorBody),
        (status = 422, description = "Blank name or role", body = ErrorBody),
    )
)]
pub async fn create_employee(
    State(state): State<ApiState>,
    ApiJson(req): ApiJson<NewEmployee>,
) -> Result<(StatusCode, Json<Employee>), ApiError> {
    let new = req.validate()?;
    let employee = data::create_employee(&state.pool, &new).await?;
    Ok((StatusCode::CREATED, Json(employee)))
}

/// Employees who may take orders.
#[utoipa::path(
    get, path = "/employees/active", tag = "employees",
    responses((status = 200, description = "Active employees by id", body = [Employee]))
)]
pub async fn active_employees(
    State(state): State<ApiState>,
) -> Result<Json<Vec<Employee>>, ApiError> {
    Ok(Json(data::active_employees(&state.pool).await?))
}
