//! The listings and searches: `/system/findDataObjects` (scope, folder, state, name glob,
//! `modified`/`created` ranges, paging with `starting`), `/system/findProjects` (level, tags,
//! properties), `/project-xxxx/listFolder` and `/system/resolveDataObjects`.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::describe::{desc_opts, describe_file, describe_project, project_folders};
use super::{invalid, not_found, visible_project, ApiError};
use crate::dataset::{BuiltFile, BuiltProject};
use crate::model::{FileId, ProjectId};
use crate::{now_ms, World};

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

pub(super) fn find_data_objects(world: &World, input: &Value) -> Result<Value, ApiError> {
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

pub(super) fn find_projects(world: &World, input: &Value) -> Result<Value, ApiError> {
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

pub(super) fn list_folder(
    world: &World,
    p: &BuiltProject,
    input: &Value,
) -> Result<Value, ApiError> {
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

pub(super) fn resolve_data_objects(world: &World, input: &Value) -> Result<Value, ApiError> {
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
}
