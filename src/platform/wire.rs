//! DNAnexus JSON wire shapes (private) and their conversion into the shared types of
//! `crate::model`.
//!
//! This module owns what the platform's JSON looks like: request bodies are built here and
//! answers are decoded here, strictly (a page missing `results` or `next`, a part number that
//! is not a number, an id that is not an id are errors, never silently dropped). It does no IO.

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

/// One page of `/system/findDataObjects`.
#[derive(Debug, Deserialize)]
pub(crate) struct FindDataObjectsPage {
    pub results: Vec<FoundObject>,
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
    pub archival_state: String,
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
        archival_state: ArchivalState::parse(&d.archival_state),
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
            .map(|o| to_remote_file(o, &pid()).unwrap())
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
        // A result without describe.
        assert!(serde_json::from_str::<FindDataObjectsPage>(
            r#"{"results": [{"id": "file-FgBkfJj04J980yX164B4Jqkq"}], "next": null}"#
        )
        .is_err());
        // A bad id.
        let bad_id = PAGE.replace("file-FK41Q8Q0BbkqJxkX35p736BJ", "file-../../etc");
        assert!(serde_json::from_str::<FindDataObjectsPage>(&bad_id).is_err());
        // A negative size.
        let neg = PAGE.replace("\"size\": 11,", "\"size\": -11,");
        assert!(serde_json::from_str::<FindDataObjectsPage>(&neg).is_err());
    }

    #[test]
    fn bad_parts_are_errors() {
        let bad = PAGE.replace("\"2\": {", "\"two\": {");
        let page: FindDataObjectsPage = serde_json::from_str(&bad).unwrap();
        let first = page.results.into_iter().next().unwrap();
        let err = to_remote_file(first, &pid()).unwrap_err();
        assert!(err.contains("not a number"), "{err}");

        let pending = PAGE.replace(
            "\"state\": \"complete\", \"size\": 17736",
            "\"state\": \"pending\", \"size\": 17736",
        );
        let page: FindDataObjectsPage = serde_json::from_str(&pending).unwrap();
        let first = page.results.into_iter().next().unwrap();
        assert!(to_remote_file(first, &pid()).is_err());
    }

    #[test]
    fn describe_must_match_result_id() {
        let swapped = PAGE.replacen(
            "\"describe\": {\"id\": \"file-FK41Q8Q0BbkqJxkX35p736BJ\"",
            "\"describe\": {\"id\": \"file-FK41Q8Q0BbkqJxkX35p736BK\"",
            1,
        );
        let page: FindDataObjectsPage = serde_json::from_str(&swapped).unwrap();
        let first = page.results.into_iter().next().unwrap();
        assert!(to_remote_file(first, &pid()).is_err());
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

        proptest! {
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
                        if let Ok(file) = to_remote_file(obj, &project) {
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
