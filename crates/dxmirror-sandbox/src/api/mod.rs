//! The JSON API routes of the sandbox (`POST /<route>`) and its control endpoints
//! (`/_sandbox/stats`, `/_sandbox/faults`).
//!
//! Shapes follow the real platform: error bodies `{"error":{"type","message"}}` with their
//! status codes, `describe` field selection, paging with `limit`/`starting`/`next`, the
//! `modified`/`created` time filters. This module reads the world under a short lock and never
//! writes bodies of downloads.

use std::collections::BTreeSet;
use std::io;
use std::sync::Arc;

use serde_json::{json, Map, Value};
use tokio::net::TcpStream;

use super::dataset::{BuiltFile, BuiltProject};
use super::download::{issue_url, UrlClaims};
use super::faults::{ApiFault, FaultConfig};
use super::http::{self, Request};
use super::{now_ms, Shared, World};
use crate::model::{FileId, ProjectId};

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

/// The drive of every drive-backed sandbox file.
const DRIVE: &str = "drive-SJCLOUD0AZURE0BLOB00001";

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
                        let world = shared.read_world();
                        route_call(shared, &world, &path, &input)
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

/// Describe options: which fields to return.
#[derive(Debug, Clone, Default)]
struct DescOpts {
    defaults: bool,
    fields: BTreeSet<String>,
}

/// Parses describe options (`true`, `{"fields":..,"defaultFields":..}`, legacy flags).
fn desc_opts(v: &Value) -> Option<DescOpts> {
    match v {
        Value::Bool(true) => Some(DescOpts {
            defaults: true,
            fields: BTreeSet::new(),
        }),
        Value::Object(m) => {
            let mut o = DescOpts::default();
            let fields = m.get("fields").and_then(Value::as_object);
            if let Some(f) = fields {
                for (k, v) in f {
                    if v.as_bool() == Some(true) {
                        o.fields.insert(k.clone());
                    }
                }
            }
            o.defaults =
                fields.is_none() || m.get("defaultFields").and_then(Value::as_bool) == Some(true);
            for legacy in ["parts", "properties", "details", "folders", "sponsorship"] {
                if m.get(legacy).and_then(Value::as_bool) == Some(true) {
                    o.fields.insert(legacy.to_owned());
                }
            }
            Some(o)
        }
        _ => None,
    }
}

const FILE_DEFAULTS: &[&str] = &[
    "id",
    "project",
    "class",
    "types",
    "created",
    "state",
    "hidden",
    "links",
    "name",
    "folder",
    "sponsored",
    "tags",
    "modified",
    "createdBy",
    "media",
    "archivalState",
    "size",
    "region",
    "drive",
];

fn file_field(f: &BuiltFile, name: &str) -> Option<Value> {
    let s = &f.spec;
    Some(match name {
        "id" => json!(f.id),
        "project" => json!(f.project),
        "class" => json!("file"),
        "types" | "tags" | "links" => json!([]),
        "created" => json!(s.created_ms),
        "modified" => json!(s.modified_ms),
        "state" => json!(s.state),
        "hidden" => json!(false),
        "name" => json!(s.name),
        "folder" => json!(s.folder),
        "sponsored" => json!(false),
        "createdBy" => json!({"user": "user-sandbox"}),
        "media" => json!("application/octet-stream"),
        "archivalState" => json!(s.archival_state),
        "size" => json!(s.size),
        "region" => json!("azure:westus"),
        "properties" => json!({}),
        "details" => json!({}),
        "drive" if s.kind.is_drive() => json!(DRIVE),
        "md5" => json!(f.md5.as_ref()?),
        "symlinkPath" if s.kind.is_drive() => {
            json!({"object": format!("azure://sjcloud/blobs/{}", f.id)})
        }
        "checksumType" => json!(f.checksum_type?.as_str()),
        "parts" if !s.kind.is_symlink() => {
            let part_state = if s.state == "closed" {
                "complete"
            } else {
                "pending"
            };
            let mut m = Map::new();
            for p in &f.parts {
                let mut pm = Map::new();
                pm.insert("state".into(), json!(part_state));
                pm.insert("size".into(), json!(p.range.len));
                if let Some(md5) = &p.md5 {
                    pm.insert("md5".into(), json!(md5));
                }
                if let Some(c) = &p.checksum {
                    pm.insert("checksum".into(), json!(c));
                }
                m.insert(p.index.to_string(), Value::Object(pm));
            }
            Value::Object(m)
        }
        _ => return None,
    })
}

fn describe_file(f: &BuiltFile, o: &DescOpts) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(f.id));
    let defaults = if o.defaults { FILE_DEFAULTS } else { &[] };
    for name in defaults
        .iter()
        .copied()
        .chain(o.fields.iter().map(String::as_str))
    {
        if let Some(v) = file_field(f, name) {
            m.insert(name.to_owned(), v);
        }
    }
    Value::Object(m)
}

fn project_field(world: &World, p: &BuiltProject, name: &str) -> Option<Value> {
    let s = &p.spec;
    Some(match name {
        "id" => json!(p.id),
        "class" => json!("project"),
        "name" => json!(s.name),
        "region" => json!("azure:westus"),
        "summary" | "description" => json!(""),
        "version" => json!(1),
        "tags" => json!(s.tags),
        "billTo" => json!("org-stjude_cloud"),
        "protected" | "restricted" | "containsPHI" => json!(true),
        "downloadRestricted" => json!(s.download_restricted),
        "created" => json!(p.created_ms),
        "modified" => json!(p.created_ms),
        "createdBy" => json!({"user": "user-stjude"}),
        "level" => json!(s.level),
        "dataUsage" | "sponsoredDataUsage" | "remoteDataUsage" => json!(0.0),
        "properties" => {
            let m: Map<String, Value> = s
                .properties
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            Value::Object(m)
        }
        "folders" => json!(project_folders(world, &p.id)),
        "cloudAccount" => json!("cloudaccount-sandbox"),
        _ => return None,
    })
}

const PROJECT_DEFAULTS: &[&str] = &[
    "id",
    "class",
    "name",
    "region",
    "summary",
    "description",
    "version",
    "tags",
    "billTo",
    "protected",
    "restricted",
    "downloadRestricted",
    "containsPHI",
    "created",
    "modified",
    "createdBy",
    "level",
    "dataUsage",
    "sponsoredDataUsage",
    "properties",
];

fn describe_project(world: &World, p: &BuiltProject, o: &DescOpts) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(p.id));
    let defaults = if o.defaults { PROJECT_DEFAULTS } else { &[] };
    for name in defaults
        .iter()
        .copied()
        .chain(o.fields.iter().map(String::as_str))
    {
        if let Some(v) = project_field(world, p, name) {
            m.insert(name.to_owned(), v);
        }
    }
    Value::Object(m)
}

fn project_describe(world: &World, p: &BuiltProject, input: &Value) -> Value {
    let o = desc_opts(input).unwrap_or(DescOpts {
        defaults: true,
        fields: BTreeSet::new(),
    });
    describe_project(world, p, &o)
}

/// Every folder of a project, with all ancestors, sorted.
fn project_folders(world: &World, id: &ProjectId) -> Vec<String> {
    let mut set = BTreeSet::new();
    set.insert("/".to_owned());
    for i in world.order.get(id).into_iter().flatten() {
        let mut folder = world.ds.files[*i].spec.folder.clone();
        while folder.len() > 1 {
            set.insert(folder.clone());
            match folder.rfind('/') {
                Some(0) | None => break,
                Some(pos) => folder.truncate(pos),
            }
        }
    }
    set.into_iter().collect()
}

fn file_describe(world: &World, id: &FileId, input: &Value) -> Result<Value, ApiError> {
    let f = world
        .file_in(id, input.get("project").and_then(Value::as_str))
        .ok_or_else(|| not_found(format!("The specified file {id} could not be found")))?;
    check_file_project(world, f, input.get("project"))?;
    let o = desc_opts(input).unwrap_or(DescOpts {
        defaults: true,
        fields: BTreeSet::new(),
    });
    Ok(describe_file(f, &o))
}

fn check_file_project(
    world: &World,
    f: &BuiltFile,
    project: Option<&Value>,
) -> Result<(), ApiError> {
    if let Some(p) = project.and_then(Value::as_str) {
        if p != f.project.as_str() {
            return Err(not_found(format!(
                "The specified project {p} does not contain the file {}",
                f.id
            )));
        }
    }
    if world.revoked.contains(&f.project) {
        return Err(denied(format!(
            "VIEW permission required in {} to perform this action",
            f.project
        )));
    }
    Ok(())
}

fn file_download(
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

fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    // Iterative glob with `*` and `?`, backtracking on the last star.
    let (mut p, mut i) = (0usize, 0usize);
    let (mut star, mut mark) = (None, 0usize);
    while i < s.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == s[i]) {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some(p);
            mark = i;
            p += 1;
        } else if let Some(sp) = star {
            p = sp + 1;
            mark += 1;
            i = mark;
        } else {
            return false;
        }
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

fn name_matches(cond: Option<&Value>, name: &str) -> Result<bool, ApiError> {
    match cond {
        None | Some(Value::Null) => Ok(true),
        Some(Value::String(s)) => Ok(s == name),
        Some(Value::Object(m)) => {
            if let Some(g) = m.get("glob").and_then(Value::as_str) {
                Ok(glob_match(g.as_bytes(), name.as_bytes()))
            } else if m.contains_key("regexp") {
                Err(invalid("name regexp is not supported by the sandbox"))
            } else {
                Err(invalid("name must be a string or {\"glob\": ...}"))
            }
        }
        Some(_) => Err(invalid("name must be a string or an object")),
    }
}

fn tags_match(cond: Option<&Value>, tags: &[String]) -> Result<bool, ApiError> {
    let has = |v: &Value| v.as_str().is_some_and(|t| tags.iter().any(|x| x == t));
    match cond {
        None | Some(Value::Null) => Ok(true),
        Some(Value::String(_)) => Ok(cond.is_some_and(has)),
        Some(Value::Object(m)) => {
            if let Some(all) = m.get("$and").and_then(Value::as_array) {
                Ok(all.iter().all(has))
            } else if let Some(any) = m.get("$or").and_then(Value::as_array) {
                Ok(any.iter().any(has))
            } else {
                Err(invalid(
                    "tags must be a string, {\"$and\": [...]} or {\"$or\": [...]}",
                ))
            }
        }
        Some(_) => Err(invalid("tags must be a string or an object")),
    }
}

fn folder_matches(file_folder: &str, folder: &str, recurse: bool) -> bool {
    if file_folder == folder {
        return true;
    }
    if !recurse {
        return false;
    }
    if folder == "/" {
        return true;
    }
    file_folder
        .strip_prefix(folder)
        .is_some_and(|rest| rest.starts_with('/'))
}

fn limit_of(input: &Value) -> Result<usize, ApiError> {
    match input.get("limit") {
        None | Some(Value::Null) => Ok(1000),
        Some(v) => match v.as_u64() {
            Some(n) if (1..=1000).contains(&n) => Ok(n as usize),
            _ => Err(invalid("limit must be an integer between 1 and 1000")),
        },
    }
}

/// A `modified`/`created` condition of `/system/findDataObjects`: `{"after": ms, "before": ms}`,
/// both optional and both inclusive; a negative value counts back from now, as on the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimeRange {
    after: Option<i64>,
    before: Option<i64>,
}

impl TimeRange {
    fn parse(input: &Value, field: &str) -> Result<Option<TimeRange>, ApiError> {
        let cond = match input.get(field) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(m)) => m,
            Some(_) => {
                return Err(invalid(format!(
                    "{field} must be a hash with optional keys after and before"
                )))
            }
        };
        let bound = |key: &str| -> Result<Option<i64>, ApiError> {
            match cond.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_i64() {
                    Some(ms) if ms < 0 => Ok(Some(now_ms() + ms)),
                    Some(ms) => Ok(Some(ms)),
                    None => Err(invalid(format!("{field}.{key} must be an integer"))),
                },
            }
        };
        if let Some(k) = cond.keys().find(|k| *k != "after" && *k != "before") {
            return Err(invalid(format!("{field} has an unexpected key {k:?}")));
        }
        Ok(Some(TimeRange {
            after: bound("after")?,
            before: bound("before")?,
        }))
    }

    fn contains(&self, ms: i64) -> bool {
        self.after.is_none_or(|a| ms >= a) && self.before.is_none_or(|b| ms <= b)
    }
}

fn find_data_objects(world: &World, input: &Value) -> Result<Value, ApiError> {
    if let Some(c) = input.get("class").and_then(Value::as_str) {
        if c != "file" {
            return Ok(json!({"results": [], "next": null}));
        }
    }
    let state = input.get("state").and_then(Value::as_str).unwrap_or("any");
    let visibility = input
        .get("visibility")
        .and_then(Value::as_str)
        .unwrap_or("visible");
    if visibility == "hidden" {
        return Ok(json!({"results": [], "next": null}));
    }
    let archival = input
        .get("archivalState")
        .and_then(Value::as_str)
        .unwrap_or("any");
    let ids: Option<BTreeSet<&str>> = input
        .get("id")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect());
    let limit = limit_of(input)?;
    let modified = TimeRange::parse(input, "modified")?;
    let created = TimeRange::parse(input, "created")?;
    let describe = input.get("describe").and_then(desc_opts);
    let scope = input.get("scope");
    let (projects, folder, recurse): (Vec<&BuiltProject>, String, bool) = match scope {
        Some(Value::Object(s)) => {
            let pid = s
                .get("project")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("scope.project is required"))?;
            let pid: ProjectId = pid
                .replacen("container-", "project-", 1)
                .parse()
                .map_err(|_| invalid(format!("scope.project {pid:?} is not a valid ID")))?;
            let p = visible_project(world, &pid)?;
            let folder = s
                .get("folder")
                .and_then(Value::as_str)
                .unwrap_or("/")
                .to_owned();
            let recurse = s.get("recurse").and_then(Value::as_bool).unwrap_or(true);
            (vec![p], folder, recurse)
        }
        _ => (
            world
                .ds
                .projects
                .iter()
                .filter(|p| !world.revoked.contains(&p.id))
                .collect(),
            "/".to_owned(),
            true,
        ),
    };
    let tags = input.get("tags");
    // `starting` = a previous `next`: {"project": .., "id": ..}.
    let starting = input.get("starting").and_then(Value::as_object);
    let mut started = starting.is_none();
    let (start_project, start_id) = match starting {
        Some(m) => (
            m.get("project").and_then(Value::as_str).unwrap_or(""),
            m.get("id").and_then(Value::as_str).unwrap_or(""),
        ),
        None => ("", ""),
    };
    let mut results = Vec::new();
    for p in projects {
        let order = world.order.get(&p.id).map(Vec::as_slice).unwrap_or(&[]);
        let mut from = 0usize;
        if !started {
            if p.id.as_str() != start_project {
                continue;
            }
            started = true;
            from = order
                .iter()
                .position(|i| world.ds.files[*i].id.as_str() == start_id)
                .unwrap_or(0);
        }
        for i in &order[from..] {
            let f = &world.ds.files[*i];
            let s = &f.spec;
            if state != "any" && s.state != state {
                continue;
            }
            if archival != "any" && s.archival_state != archival {
                continue;
            }
            if ids.as_ref().is_some_and(|ids| !ids.contains(f.id.as_str())) {
                continue;
            }
            if modified.is_some_and(|t| !t.contains(s.modified_ms))
                || created.is_some_and(|t| !t.contains(s.created_ms))
            {
                continue;
            }
            if !folder_matches(&s.folder, &folder, recurse) {
                continue;
            }
            if !name_matches(input.get("name"), &s.name)? || !tags_match(tags, &[])? {
                continue;
            }
            if results.len() == limit {
                return Ok(json!({"results": results, "next": {"project": p.id, "id": f.id}}));
            }
            let mut r = Map::new();
            r.insert("project".into(), json!(p.id));
            r.insert("id".into(), json!(f.id));
            if let Some(o) = &describe {
                r.insert("describe".into(), describe_file(f, o));
            }
            results.push(Value::Object(r));
        }
    }
    Ok(json!({"results": results, "next": null}))
}

const LEVELS: [&str; 4] = ["VIEW", "UPLOAD", "CONTRIBUTE", "ADMINISTER"];

fn level_rank(l: &str) -> Option<usize> {
    LEVELS.iter().position(|x| *x == l)
}

fn find_projects(world: &World, input: &Value) -> Result<Value, ApiError> {
    // The platform's default minimum level is CONTRIBUTE: callers must send `level`.
    let min_level = match input.get("level") {
        None | Some(Value::Null) => 2,
        Some(v) => v
            .as_str()
            .and_then(level_rank)
            .ok_or_else(|| invalid("level must be VIEW, UPLOAD, CONTRIBUTE or ADMINISTER"))?,
    };
    let limit = limit_of(input)?;
    let describe = input.get("describe").and_then(desc_opts);
    let ids: Option<BTreeSet<String>> = match input.get("id") {
        Some(Value::String(s)) => Some([s.clone()].into()),
        Some(Value::Array(a)) => Some(
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        _ => None,
    };
    let starting = input.get("starting").and_then(Value::as_str);
    let mut started = starting.is_none();
    let mut results = Vec::new();
    for p in &world.ds.projects {
        if !started {
            if Some(p.id.as_str()) != starting {
                continue;
            }
            started = true;
        }
        if world.revoked.contains(&p.id) {
            continue;
        }
        if level_rank(&p.spec.level).unwrap_or(0) < min_level {
            continue;
        }
        if ids.as_ref().is_some_and(|ids| !ids.contains(p.id.as_str())) {
            continue;
        }
        if !name_matches(input.get("name"), &p.spec.name)?
            || !tags_match(input.get("tags"), &p.spec.tags)?
        {
            continue;
        }
        if let Some(Value::Object(props)) = input.get("properties") {
            let ok = props.iter().all(|(k, v)| {
                p.spec.properties.iter().any(|(pk, pv)| {
                    pk == k && (v.as_bool() == Some(true) || v.as_str() == Some(pv.as_str()))
                })
            });
            if !ok {
                continue;
            }
        }
        if results.len() == limit {
            return Ok(json!({"results": results, "next": p.id}));
        }
        let mut r = Map::new();
        r.insert("id".into(), json!(p.id));
        r.insert("level".into(), json!(p.spec.level));
        r.insert("permissionSources".into(), json!(["user-sandbox"]));
        r.insert("public".into(), json!(false));
        if let Some(o) = &describe {
            r.insert("describe".into(), describe_project(world, p, o));
        }
        results.push(Value::Object(r));
    }
    Ok(json!({"results": results, "next": null}))
}

fn list_folder(world: &World, p: &BuiltProject, input: &Value) -> Result<Value, ApiError> {
    let folder = input.get("folder").and_then(Value::as_str).unwrap_or("/");
    let folder = if folder.len() > 1 {
        folder.trim_end_matches('/')
    } else {
        folder
    };
    let only = input.get("only").and_then(Value::as_str).unwrap_or("all");
    let all_folders = project_folders(world, &p.id);
    if !all_folders.iter().any(|f| f == folder) {
        return Err(not_found(format!(
            "The specified folder could not be found in {}",
            p.id
        )));
    }
    let mut out = Map::new();
    if only == "all" || only == "folders" {
        let subs: Vec<&String> = all_folders
            .iter()
            .filter(|f| {
                f.as_str() != folder && {
                    let parent = match f.rfind('/') {
                        Some(0) => "/",
                        Some(i) => &f[..i],
                        None => "",
                    };
                    parent == folder
                }
            })
            .collect();
        out.insert("folders".into(), json!(subs));
    }
    if only == "all" || only == "objects" {
        let describe = input.get("describe").and_then(desc_opts);
        let mut objects = Vec::new();
        for i in world.order.get(&p.id).into_iter().flatten() {
            let f = &world.ds.files[*i];
            if f.spec.folder != folder {
                continue;
            }
            let mut r = Map::new();
            r.insert("id".into(), json!(f.id));
            if let Some(o) = &describe {
                r.insert("describe".into(), describe_file(f, o));
            }
            objects.push(Value::Object(r));
        }
        out.insert("objects".into(), Value::Array(objects));
    }
    Ok(Value::Object(out))
}

fn describe_data_objects(world: &World, input: &Value) -> Result<Value, ApiError> {
    let objects = input
        .get("objects")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("objects must be an array"))?;
    let class_opts = input.get("classDescribeOptions");
    let default_opts = class_opts
        .and_then(|c| c.get("file").or_else(|| c.get("*")))
        .and_then(desc_opts)
        .unwrap_or(DescOpts {
            defaults: true,
            fields: BTreeSet::new(),
        });
    let mut results = Vec::new();
    for o in objects {
        let (id, opts, project) = match o {
            Value::String(s) => (s.as_str(), default_opts.clone(), None),
            Value::Object(m) => (
                m.get("id").and_then(Value::as_str).unwrap_or(""),
                m.get("describe")
                    .and_then(desc_opts)
                    .unwrap_or_else(|| default_opts.clone()),
                m.get("project"),
            ),
            _ => return Err(invalid("objects must be ids or objects")),
        };
        let fid: FileId = id
            .parse()
            .map_err(|_| invalid(format!("{id:?} is not a valid file ID")))?;
        let f = world
            .file_in(&fid, project.and_then(Value::as_str))
            .ok_or_else(|| not_found(format!("The specified file {fid} could not be found")))?;
        check_file_project(world, f, project)?;
        results.push(json!({"describe": describe_file(f, &opts)}));
    }
    Ok(json!({"results": results}))
}

fn resolve_data_objects(world: &World, input: &Value) -> Result<Value, ApiError> {
    let objects = input
        .get("objects")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("objects must be an array"))?;
    if objects.len() > 1000 {
        return Err(invalid("at most 1000 objects may be resolved at once"));
    }
    let default_project = input.get("project").and_then(Value::as_str);
    let default_folder = input.get("folder").and_then(Value::as_str).unwrap_or("/");
    let describe = input.get("describe").and_then(desc_opts);
    let mut results = Vec::new();
    for o in objects {
        let m = o
            .as_object()
            .ok_or_else(|| invalid("each object must be a mapping"))?;
        let mut found = Vec::new();
        let push = |f: &BuiltFile, found: &mut Vec<Value>| {
            let mut r = Map::new();
            r.insert("project".into(), json!(f.project));
            r.insert("id".into(), json!(f.id));
            if let Some(d) = &describe {
                r.insert("describe".into(), describe_file(f, d));
            }
            found.push(Value::Object(r));
        };
        if let Some(id) = m.get("id").and_then(Value::as_str) {
            let project = m.get("project").and_then(Value::as_str).or(default_project);
            if let Some(f) = id
                .parse::<FileId>()
                .ok()
                .and_then(|fid| world.file_in(&fid, project))
            {
                if !world.revoked.contains(&f.project) {
                    push(f, &mut found);
                }
            }
        } else {
            let project = m.get("project").and_then(Value::as_str).or(default_project);
            let folder = m
                .get("folder")
                .and_then(Value::as_str)
                .unwrap_or(default_folder);
            let name = m.get("name");
            let Some(project) = project else {
                return Err(invalid("project is required to resolve a name"));
            };
            let pid: ProjectId = project
                .replacen("container-", "project-", 1)
                .parse()
                .map_err(|_| invalid(format!("{project:?} is not a valid project ID")))?;
            visible_project(world, &pid)?;
            for i in world.order.get(&pid).into_iter().flatten() {
                let f = &world.ds.files[*i];
                if f.spec.folder == folder && name_matches(name, &f.spec.name)? {
                    push(f, &mut found);
                }
            }
        }
        results.push(Value::Array(found));
    }
    Ok(json!({"results": results}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"*.bam", b"x.bam"));
        assert!(!glob_match(b"*.bam", b"x.bam.bai"));
        assert!(glob_match(b"SJ*Request*", b"SJ Data Request 2026-001"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(glob_match(b"*", b""));
    }

    #[test]
    fn folders() {
        assert!(folder_matches("/a/b", "/a", true));
        assert!(!folder_matches("/ab", "/a", true));
        assert!(!folder_matches("/a/b", "/a", false));
        assert!(folder_matches("/a", "/", true));
    }

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
