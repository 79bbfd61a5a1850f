//! `/file-xxxx/download`: the checks the platform makes before it hands out a download URL
//! (archived, open, download-restricted, revoked), then a signed URL with its headers and
//! expiry, or one on the outside content server.

use serde_json::{json, Map, Value};

use super::describe::check_file_project;
use super::{denied, err, invalid, not_found, ApiError};
use crate::download::{issue_url, UrlClaims};
use crate::model::FileId;
use crate::{now_ms, Shared, World};

pub(super) fn file_download(
    shared: &Shared,
    world: &World,
    id: &FileId,
    input: &Value,
) -> Result<Value, ApiError> {
    let f = world
        .file_in(id, input.get("project").and_then(Value::as_str))
        .ok_or_else(|| not_found(format!("The specified file {id} could not be found")))?;
    check_file_project(world, f, input.get("project"))?;
    let duration = match input.get("duration") {
        None | Some(Value::Null) => 86_400,
        Some(v) => match v.as_u64() {
            Some(d) if d > 0 => d,
            _ => return Err(invalid("duration must be a positive integer")),
        },
    };
    let preauth = input
        .get("preauthenticated")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if f.spec.archival_state != "live" {
        return Err(err(
            422,
            "InvalidState",
            format!(
                "The file cannot be downloaded because it is in the {} state.",
                f.spec.archival_state
            ),
        ));
    }
    if f.spec.state != "closed" {
        return Err(err(
            422,
            "InvalidState",
            "The file cannot be downloaded because it is not in the closed state",
        ));
    }
    if world
        .project(&f.project)
        .is_some_and(|p| p.spec.download_restricted)
    {
        return Err(denied("Downloads are restricted in this project"));
    }
    let ttl_ms = (duration.saturating_mul(1000)).min(shared.url_ttl.as_millis() as u64);
    let expires_ms = now_ms() + ttl_ms as i64;
    let claims = UrlClaims {
        file: f.id.to_string(),
        project: f.project.to_string(),
        expires_ms,
        preauth,
    };
    let filename = input
        .get("filename")
        .and_then(Value::as_str)
        .unwrap_or(&f.spec.name);
    let (mut url, headers) = issue_url(shared, &claims, filename);
    if let Some(base) = shared
        .content_base
        .as_ref()
        .filter(|_| !f.spec.kind.is_drive())
    {
        // An outside content server holds the bytes (the benchmark's nginx backend).
        url = format!("{base}/{}", f.id);
    }
    let headers: Map<String, Value> = headers.into_iter().map(|(k, v)| (k, json!(v))).collect();
    Ok(json!({"url": url, "headers": headers, "expires": expires_ms}))
}
