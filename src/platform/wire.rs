//! DNAnexus JSON wire shapes (private) and their conversion into the shared types of
//! `crate::model`.
//!
//! This module owns what the platform's JSON looks like: request bodies are built here and
//! answers are decoded here. Pages are decoded strictly (a page missing `results` or `next` is
//! an error: a cut page must not pass for a short listing); each result on its own and
//! tolerantly: unknown fields, states and kinds are kept or ignored, a missing
//! `archivalState` is `live` (regions without archival omit it), and a result that still
//! cannot be read (a part number that is not a number, an id that is not an id) is that one
//! file's error ([`UnreadableResult`]), never the listing's, and never silently dropped. It
//! does no IO.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::model::{
    ArchivalState, FileId, ProjectId, ProjectInfo, RemoteFile, RemotePart, RemoteState, Stated,
};

/// The fields asked of every listed file.
pub(crate) const FILE_FIELDS: [&str; 13] = [
    "id",
    "name",
    "folder",
    "size",
    "state",
    "archivalState",
    "created",
    "modified",
    "parts",
    "drive",
    "md5",
    "checksumType",
    // The backing object's ETag of a drive-backed file: not a default field of listings
    // (`dx download -r` never gets it), so it is asked for by name.
    "symlinkTargetIdentifier",
];

/// `{"error": {"type", "message"}}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    pub error: ErrorInner,
}

/// The inner error object.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorInner {
    #[serde(rename = "type")]
    pub error_type: Option<String>,
    pub message: Option<String>,
}

/// Decodes an API error body, if it is one.
pub(crate) fn decode_error(body: &[u8]) -> Option<(Option<String>, Option<String>)> {
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|b| (b.error.error_type, b.error.message))
}

/// `/system/whoami` answer.
#[derive(Debug, Deserialize)]
pub(crate) struct WhoAmI {
    pub id: String,
}

/// `/project-xxxx/describe` answer (the fields asked for).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProjectDescribe {
    pub id: ProjectId,
    pub name: String,
    #[serde(default)]
    pub download_restricted: bool,
    #[serde(default)]
    pub level: Option<String>,
}

impl ProjectDescribe {
    pub(crate) fn into_info(self) -> ProjectInfo {
        ProjectInfo {
            id: self.id,
            name: self.name,
            download_restricted: self.download_restricted,
            level: self.level,
        }
    }
}

/// Requires the key to be present even though its value may be `null`.
fn required_nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Option::<Value>::deserialize(d)
}

/// One page of `/system/findDataObjects`. Its results are decoded one by one
/// ([`decode_result`]), so that one unreadable result fails only its file.
#[derive(Debug, Deserialize)]
pub(crate) struct FindDataObjectsPage {
    pub results: Vec<Value>,
    #[serde(deserialize_with = "required_nullable")]
    pub next: Option<Value>,
}

/// One result of `/system/findDataObjects`.
#[derive(Debug, Deserialize)]
pub(crate) struct FoundObject {
    pub id: FileId,
    pub describe: FileDescribe,
}

/// A file's `describe` with the fields of [`FILE_FIELDS`].
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FileDescribe {
    pub id: FileId,
    pub name: String,
    pub folder: String,
    pub size: u64,
    pub state: String,
    /// Absent in regions without archival: the file is live.
    #[serde(default)]
    pub archival_state: Option<String>,
    pub created: i64,
    pub modified: i64,
    #[serde(default)]
    pub parts: Option<HashMap<String, WirePart>>,
    #[serde(default)]
    pub drive: Option<String>,
    #[serde(default)]
    pub md5: Option<String>,
    #[serde(default)]
    pub checksum_type: Option<String>,
    /// `{"ETag": "..."}`; any other shape is taken as no ETag (an unknown shape must not fail
    /// the listing).
    #[serde(default)]
    pub symlink_target_identifier: Option<Value>,
}

impl FileDescribe {
    /// `symlinkTargetIdentifier.ETag`, verbatim, when it is a non-empty string.
    fn etag(&self) -> Option<String> {
        self.symlink_target_identifier
            .as_ref()?
            .get("ETag")?
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    }
}

/// One entry of `parts`.
#[derive(Debug, Deserialize)]
pub(crate) struct WirePart {
    pub size: u64,
    #[serde(default)]
    pub md5: Option<String>,
    #[serde(default)]
    pub checksum: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
}

/// A listed result that could not be read as a file: its id as the platform wrote it (or what
/// stands in its place), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableResult {
    /// The result's `id`, verbatim (at most 100 characters), or `(no id)`.
    pub id: String,
    /// What could not be read.
    pub detail: String,
}

/// Decodes one result of a `/system/findDataObjects` page into a [`RemoteFile`] of `project`.
pub(crate) fn decode_result(
    value: Value,
    project: &ProjectId,
) -> Result<RemoteFile, UnreadableResult> {
    let id = match value.get("id") {
        Some(Value::String(id)) => id.chars().take(100).collect(),
        Some(other) => other.to_string().chars().take(100).collect(),
        None => "(no id)".to_owned(),
    };
    let culprit = value.get("describe").and_then(bad_field);
    let obj: FoundObject = serde_json::from_value(value).map_err(|e| UnreadableResult {
        id: id.clone(),
        detail: match culprit {
            Some(field) => format!("its describe could not be read: field `{field}`: {e}"),
            None => format!("its describe could not be read: {e}"),
        },
    })?;
    to_remote_file(obj, project).map_err(|detail| UnreadableResult { id, detail })
}

/// The field of an unreadable describe that makes it so (serde's message does not name it):
/// the one whose removal lets the describe decode, or only miss that field.
fn bad_field(describe: &Value) -> Option<String> {
    let map = describe.as_object()?;
    map.keys().find_map(|key| {
        let mut without = map.clone();
        without.remove(key);
        match serde_json::from_value::<FileDescribe>(Value::Object(without)) {
            Ok(_) => Some(key.clone()),
            Err(e) if e.to_string().contains(&format!("missing field `{key}`")) => {
                Some(key.clone())
            }
            Err(_) => None,
        }
    })
}

/// Converts one listed object into a [`RemoteFile`] of `project`.
pub(crate) fn to_remote_file(obj: FoundObject, project: &ProjectId) -> Result<RemoteFile, String> {
    let d = obj.describe;
    let etag = d.etag();
    if d.id != obj.id {
        return Err(format!("result {} describes {}", obj.id, d.id));
    }
    let parts = match d.parts {
        None => None,
        Some(map) => {
            let mut parts = Vec::with_capacity(map.len());
            for (key, part) in map {
                let index: u32 = key
                    .parse()
                    .map_err(|_| format!("file {}: part number {key:?} is not a number", d.id))?;
                if let Some(state) = part.state.as_deref() {
                    if state != "complete" && d.state == "closed" {
                        return Err(format!(
                            "file {}: closed but part {index} is {state:?}",
                            d.id
                        ));
                    }
                }
                parts.push(RemotePart {
                    index,
                    size: part.size,
                    md5: part.md5,
                    checksum: part.checksum,
                });
            }
            parts.sort_by_key(|p| p.index);
            Some(parts)
        }
    };
    Ok(RemoteFile {
        id: d.id,
        project: project.clone(),
        name: d.name,
        folder: d.folder,
        size: d.size,
        state: RemoteState::parse(&d.state),
        archival_state: d
            .archival_state
            .as_deref()
            .map_or(ArchivalState::Live, ArchivalState::parse),
        created_ms: d.created,
        modified_ms: d.modified,
        parts,
        drive: d.drive,
        md5: d.md5.map(Stated::md5),
        checksum_type: d.checksum_type.map(Stated::checksum_type),
        etag,
    })
}

/// The body of one `/system/findDataObjects` page request.
pub(crate) fn find_files_body(
    project: &ProjectId,
    starting: Option<&Value>,
    modified_after: Option<i64>,
) -> Value {
    let fields: BTreeMap<&str, bool> = FILE_FIELDS.iter().map(|f| (*f, true)).collect();
    let mut body = json!({
        "class": "file",
        "state": "any",
        "visibility": "visible",
        "scope": {"project": project.as_str(), "folder": "/", "recurse": true},
        "describe": {"fields": fields},
        "limit": 1000,
    });
    if let Some(start) = starting {
        body["starting"] = start.clone();
    }
    if let Some(after) = modified_after {
        body["modified"] = json!({ "after": after });
    }
    body
}

/// One page of `/system/findProjects`.
#[derive(Debug, Deserialize)]
pub(crate) struct FindProjectsPage {
    pub results: Vec<FoundProject>,
    #[serde(deserialize_with = "required_nullable")]
    pub next: Option<Value>,
}

/// One result of `/system/findProjects`.
#[derive(Debug, Deserialize)]
pub(crate) struct FoundProject {
    pub id: ProjectId,
    #[serde(default)]
    pub level: Option<String>,
    pub describe: FoundProjectDescribe,
}

/// The `describe` of a found project.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FoundProjectDescribe {
    pub name: String,
    #[serde(default)]
    pub download_restricted: bool,
    #[serde(default)]
    pub level: Option<String>,
}

impl FoundProject {
    pub(crate) fn into_info(self) -> ProjectInfo {
        ProjectInfo {
            id: self.id,
            name: self.describe.name,
            download_restricted: self.describe.download_restricted,
            level: self.describe.level.or(self.level),
        }
    }
}

/// `/file-xxxx/download` answer.
#[derive(Debug, Deserialize)]
pub(crate) struct DownloadAnswer {
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub expires: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid() -> ProjectId {
        "project-FbZ25gj04J9B8FJ3Gb5fVP41".parse().unwrap()
    }

    const PAGE: &str = r#"{
      "results": [
        {"project": "project-FbZ25gj04J9B8FJ3Gb5fVP41", "id": "file-FK41Q8Q0BbkqJxkX35p736BJ",
         "describe": {"id": "file-FK41Q8Q0BbkqJxkX35p736BJ", "name": "S1 WGS ü.bam",
           "folder": "/restricted/bam", "size": 100681032, "state": "closed",
           "archivalState": "live", "created": 1600000000000, "modified": 1600000001000,
           "parts": {"2": {"state": "complete", "size": 17736, "md5": "e4d909c290d0fb1ca068ffaddf22cbd0"},
                     "1": {"state": "complete", "size": 100663296, "md5": "9e107d9d372bb6826bd81d3542a419d6"}}}},
        {"project": "project-FbZ25gj04J9B8FJ3Gb5fVP41", "id": "file-FgBkfJj04J980yX164B4Jqkq",
         "describe": {"id": "file-FgBkfJj04J980yX164B4Jqkq", "name": "S2.bam", "folder": "/",
           "size": 52428800000, "state": "closed", "archivalState": "live",
           "created": 1, "modified": 2, "drive": "drive-XXXX",
           "md5": "5eb63bbbe01eeed093cb22bb8f5acdc3"}},
        {"project": "project-FbZ25gj04J9B8FJ3Gb5fVP41", "id": "file-FgBkfJj04J980yX164B4Jqk2",
         "describe": {"id": "file-FgBkfJj04J980yX164B4Jqk2", "name": "w", "folder": "/",
           "size": 11, "state": "closed", "archivalState": "archived", "created": 1,
           "modified": 2, "drive": "drive-XXXX", "checksumType": "CRC64NVME",
           "parts": {"1": {"size": 11, "checksum": "jSnVw/bqjr4="}}}}
      ],
      "next": {"project": "project-FbZ25gj04J9B8FJ3Gb5fVP41", "id": "file-FgBkfJj04J980yX164B4Jqk3"}
    }"#;

    #[test]
    fn decodes_a_realistic_page() {
        let page: FindDataObjectsPage = serde_json::from_str(PAGE).unwrap();
        assert!(page.next.is_some());
        let files: Vec<RemoteFile> = page
            .results
            .into_iter()
            .map(|o| decode_result(o, &pid()).unwrap())
            .collect();
        assert_eq!(files.len(), 3);
        let a = &files[0];
        assert_eq!(a.name, "S1 WGS ü.bam");
        assert_eq!(a.state, RemoteState::Closed);
        let parts = a.parts.as_ref().unwrap();
        assert_eq!(
            parts.iter().map(|p| p.index).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(parts[0].size, 100663296);
        assert_eq!(a.modified_ms, 1600000001000);
        let s = &files[1];
        assert!(s.parts.is_none());
        assert_eq!(s.drive.as_deref(), Some("drive-XXXX"));
        assert_eq!(
            s.md5.as_ref().map(Stated::raw),
            Some("5eb63bbbe01eeed093cb22bb8f5acdc3")
        );
        let w = &files[2];
        assert_eq!(w.checksum_type.as_ref().map(Stated::raw), Some("CRC64NVME"));
        assert_eq!(
            w.parts.as_ref().unwrap()[0].checksum.as_deref(),
            Some("jSnVw/bqjr4=")
        );
        assert!(!w.is_downloadable());
    }

    #[test]
    fn last_page_has_null_next() {
        let page: FindDataObjectsPage =
            serde_json::from_str(r#"{"results": [], "next": null}"#).unwrap();
        assert!(page.next.is_none());
    }

    #[test]
    fn malformed_pages_are_errors() {
        // Truncated JSON.
        assert!(serde_json::from_str::<FindDataObjectsPage>(&PAGE[..PAGE.len() / 2]).is_err());
        // Missing `next`: cannot tell the last page from a cut one.
        assert!(serde_json::from_str::<FindDataObjectsPage>(r#"{"results": []}"#).is_err());
        // Missing `results`.
        assert!(serde_json::from_str::<FindDataObjectsPage>(r#"{"next": null}"#).is_err());
    }

    /// Decodes `page` and returns each result's outcome.
    fn outcomes(page: &str) -> Vec<Result<RemoteFile, UnreadableResult>> {
        let page: FindDataObjectsPage = serde_json::from_str(page).unwrap();
        page.results
            .into_iter()
            .map(|r| decode_result(r, &pid()))
            .collect()
    }

    #[test]
    fn a_malformed_result_fails_only_itself() {
        // A result without describe.
        let got =
            outcomes(r#"{"results": [{"id": "file-FgBkfJj04J980yX164B4Jqkq"}], "next": null}"#);
        let err = got[0].as_ref().unwrap_err();
        assert_eq!(err.id, "file-FgBkfJj04J980yX164B4Jqkq");
        assert!(err.detail.contains("describe"), "{err:?}");
        // A bad id, a negative size, a part number that is not a number: that result only.
        for bad in [
            PAGE.replace("file-FK41Q8Q0BbkqJxkX35p736BJ", "file-../../etc"),
            PAGE.replace("\"size\": 100681032,", "\"size\": -1,"),
            PAGE.replace("\"2\": {", "\"two\": {"),
        ] {
            let got = outcomes(&bad);
            assert_eq!(got.len(), 3);
            assert!(got[0].is_err(), "{bad}");
            assert!(got[1].is_ok() && got[2].is_ok());
        }
        let got = outcomes(&PAGE.replace("file-FK41Q8Q0BbkqJxkX35p736BJ", "file-../../etc"));
        assert_eq!(got[0].as_ref().unwrap_err().id, "file-../../etc");
        // A result that is not even an object.
        let got = outcomes(r#"{"results": [7, null], "next": null}"#);
        assert_eq!(got[0].as_ref().unwrap_err().id, "(no id)");
        assert!(got[1].is_err());
    }

    #[test]
    fn missing_archival_state_is_live_and_unknown_values_are_kept() {
        let page = PAGE
            .replacen("\"archivalState\": \"live\",", "", 1)
            .replace(
                "\"archivalState\": \"archived\"",
                "\"archivalState\": \"frozen\"",
            )
            .replace(
                "\"state\": \"closed\", \"archivalState\": \"live\"",
                "\"state\": \"sealed\", \"archivalState\": \"live\", \"newField\": {\"a\": [1]}",
            );
        let got = outcomes(&page);
        let first = got[0].as_ref().unwrap();
        assert_eq!(first.archival_state, ArchivalState::Live);
        assert!(first.is_downloadable());
        let second = got[1].as_ref().unwrap();
        assert_eq!(second.state, RemoteState::Other("sealed".to_owned()));
        let third = got[2].as_ref().unwrap();
        assert_eq!(
            third.archival_state,
            ArchivalState::Other("frozen".to_owned())
        );
        assert!(!third.is_downloadable());
    }

    #[test]
    fn bad_parts_are_errors() {
        let bad = PAGE.replace("\"2\": {", "\"two\": {");
        let err = outcomes(&bad).remove(0).unwrap_err();
        assert!(err.detail.contains("not a number"), "{err:?}");

        let pending = PAGE.replace(
            "\"state\": \"complete\", \"size\": 17736",
            "\"state\": \"pending\", \"size\": 17736",
        );
        assert!(outcomes(&pending)[0].is_err());
    }

    #[test]
    fn describe_must_match_result_id() {
        let swapped = PAGE.replacen(
            "\"describe\": {\"id\": \"file-FK41Q8Q0BbkqJxkX35p736BJ\"",
            "\"describe\": {\"id\": \"file-FK41Q8Q0BbkqJxkX35p736BK\"",
            1,
        );
        assert!(outcomes(&swapped)[0].is_err());
    }

    #[test]
    fn error_bodies() {
        let (ty, msg) = decode_error(
            br#"{"error": {"type": "InvalidState", "message": "archived", "details": {}}}"#,
        )
        .unwrap();
        assert_eq!(ty.as_deref(), Some("InvalidState"));
        assert_eq!(msg.as_deref(), Some("archived"));
        assert!(decode_error(b"<html>bad gateway</html>").is_none());
    }

    #[test]
    fn request_bodies() {
        let body = find_files_body(&pid(), None, None);
        assert_eq!(body["class"], "file");
        assert_eq!(body["state"], "any");
        assert_eq!(body["scope"]["recurse"], true);
        assert_eq!(body["describe"]["fields"]["parts"], true);
        assert_eq!(body["describe"]["fields"]["checksumType"], true);
        assert!(body.get("starting").is_none());
        let next = json!({"project": "p", "id": "f"});
        let body = find_files_body(&pid(), Some(&next), Some(5));
        assert_eq!(body["starting"], next);
        assert_eq!(body["modified"]["after"], 5);
    }

    #[test]
    fn projects_and_downloads() {
        let page: FindProjectsPage = serde_json::from_str(
            r#"{"results": [{"id": "project-FbZ25gj04J9B8FJ3Gb5fVP41", "level": "VIEW",
                "permissionSources": [], "public": false,
                "describe": {"name": "SJ request 1", "downloadRestricted": true}}], "next": null}"#,
        )
        .unwrap();
        let info = page.results.into_iter().next().unwrap().into_info();
        assert_eq!(info.name, "SJ request 1");
        assert!(info.download_restricted);
        assert_eq!(info.level.as_deref(), Some("VIEW"));

        let d: DownloadAnswer = serde_json::from_str(
            r#"{"url": "https://dl.example/F/D/abc/x.bam", "headers": {"X-Token": "s"}, "expires": 1767225600000}"#,
        )
        .unwrap();
        assert_eq!(d.headers.get("X-Token").map(String::as_str), Some("s"));
        assert_eq!(d.expires, Some(1767225600000));
        assert!(serde_json::from_str::<DownloadAnswer>(r#"{"headers": {}}"#).is_err());
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// A describe object whose fields are each valid, wrong-typed, absent or absurd.
        fn describe_json() -> impl Strategy<Value = String> {
            let value = prop_oneof![
                Just("null".to_owned()),
                any::<i64>().prop_map(|n| n.to_string()),
                "[a-zA-Z0-9 ./_-]{0,20}".prop_map(|s| format!("{s:?}")),
                Just("{}".to_owned()),
                Just("[]".to_owned()),
                Just(r#"{"1": {"size": 5, "md5": "d41d8cd98f00b204e9800998ecf8427e"}}"#.to_owned()),
                Just(r#"{"x": {"size": -1}}"#.to_owned()),
                Just(r#"{"1": {"size": 18446744073709551615, "state": "pending"}}"#.to_owned()),
            ];
            // Every field asked of a listed file but the id, which the page fixes.
            let fields = &FILE_FIELDS[1..];
            proptest::collection::vec((0..fields.len(), value, any::<bool>()), 0..12).prop_map(
                move |entries| {
                    let mut body = String::from(r#"{"id": "file-000000000000000000000001""#);
                    for (i, v, keep) in entries {
                        if keep {
                            body.push_str(&format!(", {:?}: {v}", fields[i]));
                        }
                    }
                    body.push('}');
                    body
                },
            )
        }

        /// A JSON value of any shape, for unknown fields.
        fn any_json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|n| json!(n)),
                "[ -~]{0,12}".prop_map(Value::String),
            ];
            leaf.prop_recursive(3, 16, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// A word the platform might send tomorrow for a state or a kind.
        fn word() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("live".to_owned()),
                Just("closed".to_owned()),
                Just("open".to_owned()),
                Just("archived".to_owned()),
                "[a-zA-Z_]{1,12}",
            ]
        }

        /// A well-formed describe of a closed 11-byte file with two parts, with each optional
        /// field present or absent, enum fields taking any word, and unknown fields (at the
        /// top level and in the parts) holding any JSON.
        fn tolerated_describe() -> impl Strategy<Value = (Value, [bool; 6], String, String)> {
            (
                any::<[bool; 6]>(),
                word(),
                word(),
                word(),
                proptest::collection::btree_map("[a-z]{1,8}[A-Z][a-z]{0,4}", any_json(), 0..4),
                any_json(),
            )
                .prop_map(|(keep, state, archival, checksum_type, extra, part_extra)| {
                    let mut d = serde_json::Map::new();
                    for (k, v) in extra {
                        d.insert(k, v);
                    }
                    d.insert("id".into(), json!("file-000000000000000000000001"));
                    d.insert("name".into(), json!("x.bam"));
                    d.insert("folder".into(), json!("/"));
                    d.insert("size".into(), json!(11));
                    d.insert("state".into(), json!(state));
                    d.insert("created".into(), json!(1));
                    d.insert("modified".into(), json!(2));
                    let optional = [
                        ("archivalState", json!(archival)),
                        (
                            "parts",
                            json!({"1": {"size": 5, "md5": "d41d8cd98f00b204e9800998ecf8427e", "zNew": part_extra},
                                   "2": {"size": 6}}),
                        ),
                        ("drive", json!("drive-XXXX")),
                        ("md5", json!("5eb63bbbe01eeed093cb22bb8f5acdc3")),
                        ("checksumType", json!(checksum_type)),
                        ("symlinkTargetIdentifier", json!({"ETag": "\"0x8D1\"", "zNew": 1})),
                    ];
                    for (present, (k, v)) in keep.iter().zip(optional) {
                        if *present {
                            d.insert(k.into(), v);
                        }
                    }
                    (Value::Object(d), keep, state, archival)
                })
        }

        proptest! {
            /// Whatever optional fields are missing and whatever unknown fields, states and
            /// kinds are added, a well-formed describe is a file, and what it says is kept:
            /// a missing `archivalState` is live, an unknown word is kept verbatim.
            #[test]
            fn optional_and_unknown_fields_never_fail_a_file((describe, keep, state, archival) in tolerated_describe()) {
                let project: ProjectId = "project-000000000000000000000001".parse().unwrap();
                let result = json!({"id": "file-000000000000000000000001", "project": project.as_str(), "describe": describe, "zNew": [1]});
                let page = json!({"results": [result], "next": null, "zNew": {}});
                let page: FindDataObjectsPage = serde_json::from_value(page).unwrap();
                let file = decode_result(page.results[0].clone(), &project);
                let file = file.map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                prop_assert_eq!(file.state, RemoteState::parse(&state));
                let want = if keep[0] { ArchivalState::parse(&archival) } else { ArchivalState::Live };
                prop_assert_eq!(file.archival_state, want);
                prop_assert_eq!(file.parts.as_ref().map(Vec::len), keep[1].then_some(2));
                prop_assert_eq!(file.drive.is_some(), keep[2]);
                prop_assert_eq!(file.md5.is_some(), keep[3]);
                prop_assert_eq!(file.checksum_type.is_some(), keep[4]);
                prop_assert_eq!(file.etag.is_some(), keep[5]);
            }

            /// Arbitrary bytes never panic the decoders: they are errors (or, for error bodies,
            /// nothing).
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = decode_error(&bytes);
                let _ = serde_json::from_slice::<FindDataObjectsPage>(&bytes);
                let _ = serde_json::from_slice::<FindProjectsPage>(&bytes);
                let _ = serde_json::from_slice::<DownloadAnswer>(&bytes);
                let _ = serde_json::from_slice::<ProjectDescribe>(&bytes);
            }

            /// A page whose describe objects carry any mix of good, missing, mistyped and
            /// absurd fields is decoded into files or refused with a reason, never a panic;
            /// whatever is accepted is internally consistent.
            #[test]
            fn odd_describe_objects_are_files_or_errors(describes in proptest::collection::vec(describe_json(), 0..4)) {
                let results: Vec<String> = describes
                    .iter()
                    .map(|d| format!(r#"{{"id": "file-000000000000000000000001", "describe": {d}}}"#))
                    .collect();
                let page = format!(r#"{{"results": [{}], "next": null}}"#, results.join(","));
                let project: ProjectId = "project-000000000000000000000001".parse().unwrap();
                if let Ok(page) = serde_json::from_str::<FindDataObjectsPage>(&page) {
                    for obj in page.results {
                        if let Ok(file) = decode_result(obj, &project) {
                            prop_assert_eq!(file.project, project.clone());
                            if let Some(parts) = &file.parts {
                                prop_assert!(parts.windows(2).all(|w| w[0].index < w[1].index));
                            }
                        }
                    }
                }
            }
        }
    }
}
