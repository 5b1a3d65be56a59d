//! The HTTP front door's errors: a status and a JSON body `{code, message}` (and, for a body
//! at fault, the JSON pointer of the field).

use crate::error::Error;
use crate::ingest::ParseError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable code such as `invalid_body` or `forbidden`.
    pub code: &'static str,
    /// What is wrong, for a person.
    pub message: String,
    /// The JSON pointer of the field at fault, for a body that was read but not accepted.
    pub pointer: Option<String>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            pointer: None,
        }
    }

    /// 400 for a body that is not what the route takes.
    pub fn body(e: &ParseError) -> ApiError {
        let pointer = match e {
            ParseError::Field { path, .. } | ParseError::Key { path, .. } => Some(path.clone()),
            ParseError::Json(_) => Some(String::new()),
            _ => None,
        };
        ApiError {
            pointer,
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.to_string())
        }
    }

    /// 404 for a route, environment or segment that does not exist.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 401: no token, or one that is unknown or revoked.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid access token is required in the Authorization header",
        )
    }

    /// 403: the token's policy does not allow the action.
    pub fn forbidden(action: &str, resource: &str) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the access token's policy does not allow {action} on {resource}"),
        )
    }

    /// What a store failure means to the client.
    pub fn store(e: &Error) -> ApiError {
        match e {
            Error::InvalidKey { .. }
            | Error::InvalidArgument { .. }
            | Error::BatchTooLarge { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string())
            }
            Error::UnknownSegment(_) => ApiError::not_found(e.to_string()),
            Error::SegmentExists(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            _ => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("the store refused the write, nothing of it was applied: {e}"),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "code": self.code, "message": self.message });
        if let (Some(pointer), Some(obj)) = (&self.pointer, body.as_object_mut()) {
            obj.insert("pointer".into(), serde_json::Value::String(pointer.clone()));
        }
        (self.status, axum::Json(body)).into_response()
    }
}
