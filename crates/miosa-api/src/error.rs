//! The error contract: every failure leaves as
//! `{"error":{"code","message","request_id"[, "field"]}}` with a fitting status.
//! This is the one place domain and store errors become HTTP.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use miosa_core::FieldError;
use miosa_store::StoreError;
use serde::Serialize;

use crate::request_id;

/// An error on its way to becoming an HTTP response.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not valid JSON of the right overall shape.
    #[error("{0}")]
    MalformedJson(String),
    /// 422: one field is invalid. `code` defaults to `invalid_field`.
    #[error("{field}: {message}")]
    Invalid {
        code: &'static str,
        field: String,
        message: String,
    },
    /// 401: missing, unknown or revoked key.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: authenticated, but this key may not do this.
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// 404: no such resource (or another tenant's).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 404 with a specific message (e.g. which path inside a sandbox).
    #[error("{0}")]
    NotFoundMessage(String),
    /// 405: the path exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: the request conflicts with current state.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// 413: the body is larger than accepted.
    #[error("request body too large")]
    PayloadTooLarge,
    /// 503: a dependency (the database) does not answer.
    #[error("{0}")]
    Unavailable(&'static str),
    /// 503 with a specific code: this server cannot do it now (e.g. it
    /// lacks the master key the database seals under).
    #[error("{message}")]
    UnavailableWith { code: &'static str, message: String },
    /// 500: logged with its cause, returned opaque.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden {
            code: "forbidden",
            message: message.into(),
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            code: "invalid_field",
            field: field.into(),
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            ApiError::Invalid { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden { code, .. } => (StatusCode::FORBIDDEN, code),
            ApiError::NotFound(_) | ApiError::NotFoundMessage(_) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::UnavailableWith { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::invalid(e.field, e.reason)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { entity, field } => ApiError::Conflict {
                code: "conflict",
                message: format!("a {entity} with this {field} already exists"),
            },
            StoreError::MissingReference { field } => {
                ApiError::invalid(field, "does not name an existing resource")
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<miosa_secrets::SecretsError> for ApiError {
    fn from(e: miosa_secrets::SecretsError) -> Self {
        use miosa_secrets::SecretsError as E;
        match e {
            E::Invalid(f) => f.into(),
            E::NotFound => ApiError::NotFound("secret"),
            E::EndUserCredentialsDisabled => ApiError::Forbidden {
                code: "end_user_credentials_disabled",
                message: e.to_string(),
            },
            E::WorkspaceKeyForbidden(why) => ApiError::Forbidden {
                code: "workspace_key_forbidden",
                message: why.to_owned(),
            },
            E::Contended => ApiError::Conflict {
                code: "write_conflict",
                message: e.to_string(),
            },
            E::SealingKeyUnavailable { .. } => ApiError::UnavailableWith {
                code: "master_key_unavailable",
                message: e.to_string(),
            },
            E::Store(StoreError::Conflict { entity, field }) => ApiError::Conflict {
                code: "conflict",
                message: format!(
                    "another {entity} with the same scope and key already uses this {field}"
                ),
            },
            E::Store(s) => s.into(),
            // Vault errors never carry a value, but keep them opaque anyway.
            E::Vault(v) => ApiError::Internal(format!("vault: {v}")),
        }
    }
}

impl From<miosa_sandboxes::SandboxError> for ApiError {
    fn from(e: miosa_sandboxes::SandboxError) -> Self {
        use miosa_sandboxes::SandboxError as E;
        match e {
            E::Invalid(f) => f.into(),
            E::NotFound => ApiError::NotFound("sandbox"),
            E::Paused => ApiError::Conflict {
                code: "sandbox_paused",
                message: "the sandbox is paused; resume it first".into(),
            },
            E::NotRunning(status) => ApiError::Conflict {
                code: "sandbox_not_running",
                message: format!(
                    "the sandbox is {status}, not running; delete it and create another"
                ),
            },
            E::OtherNode(node) => ApiError::Conflict {
                code: "sandbox_on_other_node",
                message: format!("the sandbox runs on node {node}; send this request to that node"),
            },
            E::StartFailed(cause) => {
                tracing::error!(%cause, "sandbox start failed");
                ApiError::Unavailable("the sandbox could not be started; try again")
            }
            E::Store(s) => s.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<miosa_agent::AgentError> for ApiError {
    fn from(e: miosa_agent::AgentError) -> Self {
        use miosa_agent::AgentError as E;
        match e {
            E::NotFound(m) => ApiError::NotFoundMessage(m),
            E::Invalid(m) => ApiError::invalid("path", m),
            E::Forbidden(m) => ApiError::forbidden(m),
            E::Conflict(m) => ApiError::Conflict {
                code: "conflict",
                message: m,
            },
            E::Unavailable(m) => {
                tracing::warn!(cause = %m, "sandbox agent unreachable");
                ApiError::Conflict {
                    code: "sandbox_not_running",
                    message: "the sandbox does not answer; it may have stopped".into(),
                }
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<miosa_core::CoreError> for ApiError {
    fn from(e: miosa_core::CoreError) -> Self {
        match e {
            miosa_core::CoreError::Invalid(f) => f.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// The JSON body of every error response.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, for people and programs.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case, safe to branch on: `invalid_field`, `not_found`, ...
    pub code: String,
    /// A human sentence; may change between versions.
    pub message: String,
    /// The `x-request-id` of this request, for support.
    pub request_id: String,
    /// The offending field or parameter, for `invalid_field`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                "an internal error occurred; quote the request id to support".to_owned()
            }
            ApiError::Invalid { field, message, .. } => format!("{field}: {message}"),
            other => other.to_string(),
        };
        let field = match &self {
            ApiError::Invalid { field, .. } => Some(field.clone()),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message,
                request_id: request_id::current().unwrap_or_default(),
                field,
            },
        };
        (status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
