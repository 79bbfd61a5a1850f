//! The JSON API routes of the sandbox (`POST /<route>`) and its control endpoints
//! (`/_sandbox/stats`, `/_sandbox/faults`).
//!
//! Shapes follow the real platform: error bodies `{"error":{"type","message"}}` with their
//! status codes, `describe` field selection, paging with `limit`/`starting`/`next`, the
//! `modified`/`created` time filters. This module reads the world under a short lock and never
//! writes bodies of downloads.
//!
//! This file authenticates, injects API faults, parses the body and routes the call;
//! `describe` answers the describe routes (field selection for files and projects), `url`
//! issues download URLs (`/file-xxxx/download`), `find` the listings and searches
//! (`findDataObjects`, `findProjects`, `listFolder`, `resolveDataObjects`).

mod describe;
mod find;
mod url;

use std::io;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::net::TcpStream;

use super::dataset::BuiltProject;
use super::faults::{ApiFault, FaultConfig};
use super::http::{self, Request};
use super::{Shared, World};
use crate::model::{FileId, ProjectId};
use describe::{describe_data_objects, file_describe, project_describe};
use find::{find_data_objects, find_projects, list_folder, resolve_data_objects};
use url::file_download;

/// An API error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: u16,
    kind: &'static str,
    message: String,
}

fn err(status: u16, kind: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        kind,
        message: message.into(),
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    err(400, "InvalidInput", message)
}

fn not_found(message: impl Into<String>) -> ApiError {
    err(404, "ResourceNotFound", message)
}

fn denied(message: impl Into<String>) -> ApiError {
    err(401, "PermissionDenied", message)
}

/// Normalises a route for counting: ids become `xxxx`.
fn route_key(path: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for seg in path.split('/') {
        let norm = ["file-", "project-", "container-", "user-"]
            .iter()
            .find(|p| seg.starts_with(*p))
            .map(|p| format!("{p}xxxx"))
            .unwrap_or_else(|| seg.to_owned());
        parts.push(norm);
    }
    parts.join("/")
}

/// Handles one API-host request (not a download URL).
pub(crate) async fn handle(
    stream: &mut TcpStream,
    shared: &Arc<Shared>,
    req: &Request,
) -> io::Result<bool> {
    let path = req.path().to_owned();
    let route = route_key(&path);
    let nth = shared.counters.request(&route);
    let retry_after = shared.retry_after_secs.to_string();
    let authed = {
        let world = shared.read_world();
        match req.header("authorization") {
            None => Err(err(
                401,
                "InvalidAuthentication",
                "Expected an Authorization header",
            )),
            Some(v)
                if v.trim().split_once(' ').is_some_and(|(scheme, tok)| {
                    scheme.eq_ignore_ascii_case("bearer") && tok.trim() == world.token
                }) =>
            {
                Ok(())
            }
            Some(_) => Err(err(
                401,
                "InvalidAuthentication",
                "The token could not be found",
            )),
        }
    };
    let mut extra: Vec<(&str, String)> = Vec::new();
    let result: Result<Value, ApiError> = if let Err(e) = authed {
        Err(e)
    } else if let Some(ctl) = path.strip_prefix("/_sandbox/") {
        control(shared, ctl, req)
    } else if req.method != "POST" {
        Err(err(
            405,
            "InvalidInput",
            "API methods must be called with POST",
        ))
    } else {
        match shared.faults().api_fault(&route, nth) {
            Some(f) => {
                shared.counters.fault(match f {
                    ApiFault::Api500 => "api500",
                    ApiFault::Api503 => "api503",
                    ApiFault::Api429 => "api429",
                    ApiFault::Api423 => "api423",
                });
                match f {
                    ApiFault::Api500 => Err(err(500, "InternalError", "Internal error")),
                    ApiFault::Api503 => {
                        extra.push(("Retry-After", retry_after.clone()));
                        Err(err(
                            503,
                            "ServiceUnavailable",
                            "Service temporarily unavailable",
                        ))
                    }
                    ApiFault::Api429 => {
                        extra.push(("Retry-After", retry_after.clone()));
                        Err(err(429, "RateLimitConditional", "Too many requests"))
                    }
                    // The error type is the sandbox's word (clients go by the status). It
                    // states the sandbox's `Retry-After` too, so that tests wait a second,
                    // not a locked answer's default wait.
                    ApiFault::Api423 => {
                        extra.push(("Retry-After", retry_after.clone()));
                        Err(err(
                            423,
                            "ResourceLocked",
                            "The object is locked by another operation",
                        ))
                    }
                }
            }
            None => {
                let input: Result<Value, ApiError> = if req.body.iter().all(u8::is_ascii_whitespace)
                {
                    Ok(json!({}))
                } else {
                    serde_json::from_slice(&req.body).map_err(|_| {
                        err(
                            400,
                            "MalformedJSON",
                            "The input could not be parsed as JSON",
                        )
                    })
                };
                match input {
                    Ok(input) if input.is_object() => {
                        let result = {
                            let world = shared.read_world();
                            route_call(shared, &world, &path, &input)
                        };
                        if path.trim_end_matches('/') == "/system/findDataObjects" {
                            shared.modify_if_due();
                        }
                        result
                    }
                    Ok(_) => Err(err(400, "MalformedJSON", "The input must be a JSON object")),
                    Err(e) => Err(e),
                }
            }
        }
    };
    let (status, body) = match result {
        Ok(v) => (200, v),
        Err(e) => (
            e.status,
            json!({"error": {"type": e.kind, "message": e.message}}),
        ),
    };
    let body = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
    let mut headers = vec![
        ("Content-Type", "application/json".to_owned()),
        ("X-Request-ID", format!("sandbox-{nth}")),
    ];
    headers.extend(extra);
    http::write_simple(stream, status, &headers, &body, true).await?;
    Ok(true)
}

fn control(shared: &Shared, ctl: &str, req: &Request) -> Result<Value, ApiError> {
    match (req.method.as_str(), ctl) {
        ("GET", "stats") | ("POST", "stats") => serde_json::to_value(shared.counters.snapshot())
            .map_err(|e| err(500, "InternalError", e.to_string())),
        ("GET", "faults") => serde_json::to_value(shared.faults())
            .map_err(|e| err(500, "InternalError", e.to_string())),
        ("POST", "faults") => {
            let v: Value = serde_json::from_slice(&req.body).map_err(|_| {
                err(
                    400,
                    "MalformedJSON",
                    "The input could not be parsed as JSON",
                )
            })?;
            let cfg: FaultConfig = match v.get("spec").and_then(Value::as_str) {
                Some(spec) => FaultConfig::parse(spec).map_err(|e| invalid(e.to_string()))?,
                None => serde_json::from_value(v).map_err(|e| invalid(e.to_string()))?,
            };
            shared.set_faults(cfg.clone());
            serde_json::to_value(cfg).map_err(|e| err(500, "InternalError", e.to_string()))
        }
        _ => Err(not_found("no such control endpoint")),
    }
}

fn route_call(
    shared: &Shared,
    world: &World,
    path: &str,
    input: &Value,
) -> Result<Value, ApiError> {
    let path = path.trim_end_matches('/');
    match path {
        "/system/whoami" => Ok(json!({"id": "user-sandbox"})),
        "/system/findDataObjects" => find_data_objects(world, input),
        "/system/findProjects" => find_projects(world, input),
        "/system/describeDataObjects" => describe_data_objects(world, input),
        "/system/resolveDataObjects" => resolve_data_objects(world, input),
        "/system/describeProjects" => Ok(json!({"results": []})),
        "/system/greet" => Ok(json!({"update": {"available": false}, "messages": []})),
        _ => {
            let trimmed = path.trim_start_matches('/');
            let (object, method) = trimmed.split_once('/').unwrap_or((trimmed, ""));
            if object.starts_with("user-") && method == "describe" {
                return Ok(json!({"id": object, "class": "user", "handle": "sandbox",
                    "first": "Sandbox", "last": "User", "email": "sandbox@localhost"}));
            }
            if object.starts_with("file-") {
                let id: FileId = object
                    .parse()
                    .map_err(|_| not_found(format!("\"{object}\" is not a valid ID")))?;
                return match method {
                    "describe" => file_describe(world, &id, input),
                    "download" => file_download(shared, world, &id, input),
                    _ => Err(not_found(format!(
                        "The route /{object}/{method} does not exist"
                    ))),
                };
            }
            if object.starts_with("project-") || object.starts_with("container-") {
                let pid: ProjectId = object
                    .replacen("container-", "project-", 1)
                    .parse()
                    .map_err(|_| not_found(format!("\"{object}\" is not a valid ID")))?;
                let project = visible_project(world, &pid)?;
                return match method {
                    "describe" => Ok(project_describe(world, project, input)),
                    "listFolder" => list_folder(world, project, input),
                    _ => Err(not_found(format!(
                        "The route /{object}/{method} does not exist"
                    ))),
                };
            }
            Err(not_found(format!("The route {path} does not exist")))
        }
    }
}

fn visible_project<'w>(world: &'w World, id: &ProjectId) -> Result<&'w BuiltProject, ApiError> {
    let p = world
        .project(id)
        .ok_or_else(|| not_found(format!("The specified project {id} could not be found")))?;
    if world.revoked.contains(id) {
        return Err(denied(format!(
            "VIEW permission required in {id} to perform this action"
        )));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_keys() {
        assert_eq!(
            route_key("/file-B0vY9x9Q0b1QKq2F3Y4Z5a6b/download"),
            "/file-xxxx/download"
        );
        assert_eq!(
            route_key("/system/findDataObjects"),
            "/system/findDataObjects"
        );
    }
}
