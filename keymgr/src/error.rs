//! The one error shape of the REST API:
//! `{"code": <int>, "codeDesc": "...", "message": "..."}` with an HTTP status.
//!
//! Messages are written for administrators. They never carry key material,
//! passwords or bearer tokens.

use serde_json::json;

use crate::store::StoreError;

/// An error answered to a REST client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Stable numeric code (one per kind).
    pub code: u32,
    /// Stable symbolic code, CipherTrust style.
    pub code_desc: &'static str,
    /// Human readable detail.
    pub message: String,
}

impl ApiError {
    fn new(status: u16, code: u32, code_desc: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            code_desc,
            message: message.into(),
        }
    }

    /// 400: malformed request or invalid field.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, 1, "NCERRBadRequest", msg)
    }
    /// 401: missing or bad credentials.
    pub fn unauthorized(msg: impl Into<String>) -> Self {
        Self::new(401, 2, "NCERRUnauthorized", msg)
    }
    /// 403: authenticated but not allowed.
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(403, 3, "NCERRForbidden", msg)
    }
    /// 404: no such resource.
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(404, 4, "NCERRResourceNotFound", msg)
    }
    /// 405: the resource exists but not with this method.
    pub fn method_not_allowed(msg: impl Into<String>) -> Self {
        Self::new(405, 5, "NCERRMethodNotAllowed", msg)
    }
    /// 409: conflicts with the current state (duplicate name, in use).
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::new(409, 6, "NCERRConflict", msg)
    }
    /// 413: body larger than the limit.
    pub fn too_large(msg: impl Into<String>) -> Self {
        Self::new(413, 7, "NCERRPayloadTooLarge", msg)
    }
    /// 422: well formed but semantically unacceptable.
    pub fn unprocessable(msg: impl Into<String>) -> Self {
        Self::new(422, 8, "NCERRUnprocessableEntity", msg)
    }
    /// 500: our fault; details go to the log, not to the client.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(500, 9, "NCERRInternalServerError", msg)
    }

    /// The JSON body.
    pub fn to_json(&self) -> serde_json::Value {
        json!({"code": self.code, "codeDesc": self.code_desc, "message": self.message})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code_desc, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ApiError::not_found(m),
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::Refused(m) => ApiError::forbidden(m),
            StoreError::Invalid(m) => ApiError::unprocessable(m),
            StoreError::Backend(m) => {
                log::error!("storage error: {m}");
                ApiError::internal("storage error")
            }
        }
    }
}
