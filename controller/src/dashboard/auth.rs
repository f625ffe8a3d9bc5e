//! Actions need a bearer token the API server accepts (TokenReview) whose
//! user RBAC allows the action (SubjectAccessReview): the same rules as
//! kubectl, so who may pause Headroom is decided where all access is.

use axum::http::{HeaderMap, StatusCode};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

/// What an action touches, as an RBAC check.
pub struct Permission {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub namespace: String,
    pub name: Option<String>,
}

/// The user name when the token is valid and allowed; otherwise the status
/// code (401 or 403) and why.
pub async fn authorize(
    client: &kube::Client,
    headers: &HeaderMap,
    need: &Permission,
) -> Result<String, (StatusCode, String)> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or((
            StatusCode::UNAUTHORIZED,
            "send a Kubernetes bearer token: Authorization: Bearer <token>".to_owned(),
        ))?;
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_owned(),
            ..Default::default()
        },
        ..Default::default()
    };
    let reviewed = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot review the token with the API server: {e}"),
            )
        })?;
    let status = reviewed.status.unwrap_or_default();
    let user = match (status.authenticated, status.user) {
        (Some(true), Some(user)) => user,
        _ => {
            return Err((
                StatusCode::UNAUTHORIZED,
                format!(
                    "the API server did not accept the token{}",
                    status.error.map(|e| format!(": {e}")).unwrap_or_default()
                ),
            ));
        }
    };
    let name = user.username.clone().unwrap_or_default();
    let sar = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            groups: user.groups.clone(),
            uid: user.uid.clone(),
            extra: user.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(need.verb.to_owned()),
                group: Some(need.group.to_owned()),
                resource: Some(need.resource.to_owned()),
                namespace: Some(need.namespace.clone()),
                name: need.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let decided = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &sar)
        .await
        .map_err(|e| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot check access with the API server: {e}"),
            )
        })?;
    if decided.status.is_some_and(|s| s.allowed) {
        Ok(name)
    } else {
        Err((
            StatusCode::FORBIDDEN,
            format!(
                "{name} may not {} {} in namespace {}",
                need.verb, need.resource, need.namespace
            ),
        ))
    }
}
