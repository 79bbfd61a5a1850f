//! Download URLs asked for ahead of their file's turn, so that URL requests overlap the
//! transfers instead of each preceding its file's first byte. Only an optimisation: a failed
//! request is dropped and the file asks again, through the retry table, when it starts.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;
use tracing::debug;

use super::Engine;
use crate::journal::FileKey;
use crate::platform::DownloadUrl;

/// The requests out or answered, by file.
#[derive(Default)]
pub(super) struct Prefetched(Mutex<HashMap<FileKey, oneshot::Receiver<DownloadUrl>>>);

impl Prefetched {
    fn lock(&self) -> MutexGuard<'_, HashMap<FileKey, oneshot::Receiver<DownloadUrl>>> {
        // A poisoned lock only means a panic elsewhere while inserting: keep going.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Engine {
    /// Asks for the download URL of a file that will run soon, in the background, so that it
    /// is ready when the file starts (URL requests are pipelined ahead of the transfers
    /// instead of each preceding its file's first byte). Only an optimisation: a failed
    /// request is dropped and the file asks again, through the retry table, when it starts.
    /// The caller bounds how many are outstanding and calls [`Engine::forget_prefetched`]
    /// for files it will not run.
    pub fn prefetch_url(&self, key: &FileKey) {
        let (tx, rx) = oneshot::channel();
        let client = self.client.clone();
        let (file, project) = (key.file.clone(), key.project.clone());
        // Its own task, outside any file's span: the line names the file itself.
        tokio::spawn(async move {
            match client.download_url(&file, &project).await {
                Ok(url) => {
                    let _ = tx.send(url);
                }
                Err(e) => {
                    debug!(project_id = %project, file_id = %file, error = %e, "download URL asked ahead failed; the file will ask again");
                }
            }
        });
        self.prefetched.lock().insert(key.clone(), rx);
    }

    /// Drops the URLs asked for ahead of files that will not run.
    pub fn forget_prefetched<'k>(&self, keys: impl IntoIterator<Item = &'k FileKey>) {
        let mut map = self.prefetched.lock();
        for key in keys {
            map.remove(key);
        }
    }

    /// The URL asked for ahead of this file, waiting for the request if it is still out;
    /// `None` when none was asked for or the request failed.
    pub(super) async fn take_prefetched(&self, key: &FileKey) -> Option<DownloadUrl> {
        let rx = self.prefetched.lock().remove(key)?;
        rx.await.ok()
    }
}
