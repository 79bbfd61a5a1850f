//! The describe routes (`/file-xxxx/describe`, `/project-xxxx/describe`,
//! `/system/describeDataObjects`) and the field selection they share with the listings: the
//! platform's default fields, `fields`/`defaultFields`, and the legacy flags.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::{denied, invalid, not_found, ApiError};
use crate::dataset::{BuiltFile, BuiltProject, FileSpecKind};
use crate::model::{FileId, ProjectId};
use crate::World;

/// The drive of every drive-backed sandbox file but the published ones.
const DRIVE: &str = "drive-SJCLOUD0AZURE0BLOB00001";
/// The drive of [`FileSpecKind::PublishedDrive`] files.
const PUBLISHED_DRIVE: &str = "drive-PUBLISHED";

/// Describe options: which fields to return.
#[derive(Debug, Clone, Default)]
pub(super) struct DescOpts {
    pub(super) defaults: bool,
    pub(super) fields: BTreeSet<String>,
}

/// Parses describe options (`true`, `{"fields":..,"defaultFields":..}`, legacy flags).
pub(super) fn desc_opts(v: &Value) -> Option<DescOpts> {
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
    // Only files with a whole-file md5 (symlinks, published files) have it; dxpy's download
    // reads it from `describe(fields={"parts"}, default_fields=True)`.
    "md5",
    // Only pinned drive-backed files have it (as dx download relies on getting it by default).
    "symlinkTargetIdentifier",
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
        "drive" if matches!(s.kind, FileSpecKind::PublishedDrive(_)) => json!(PUBLISHED_DRIVE),
        "drive" if s.kind.is_drive() => json!(DRIVE),
        "md5" => json!(f.md5.as_ref()?),
        "symlinkPath" if s.kind.is_drive() => {
            json!({"object": format!("azure://sjcloud/blobs/{}", f.id)})
        }
        "checksumType" => json!(f.checksum_type?.as_str()),
        "symlinkTargetIdentifier" => json!({"ETag": f.etag.as_ref()?}),
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

pub(super) fn describe_file(f: &BuiltFile, o: &DescOpts) -> Value {
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
    for (key, value) in &f.spec.describe_patch {
        match value {
            Some(v) => m.insert(key.clone(), v.clone()),
            None => m.remove(key),
        };
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

pub(super) fn describe_project(world: &World, p: &BuiltProject, o: &DescOpts) -> Value {
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

pub(super) fn project_describe(world: &World, p: &BuiltProject, input: &Value) -> Value {
    let o = desc_opts(input).unwrap_or(DescOpts {
        defaults: true,
        fields: BTreeSet::new(),
    });
    describe_project(world, p, &o)
}

/// Every folder of a project, with all ancestors, sorted.
pub(super) fn project_folders(world: &World, id: &ProjectId) -> Vec<String> {
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

pub(super) fn file_describe(world: &World, id: &FileId, input: &Value) -> Result<Value, ApiError> {
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

pub(super) fn check_file_project(
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

pub(super) fn describe_data_objects(world: &World, input: &Value) -> Result<Value, ApiError> {
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
