//! Runs by hand as root over the service's files: a `sync`, `verify --repair` or `purge` run
//! as root where the state directory or the mirror root belongs to another user (the service
//! user) would leave root-owned lock, journal and data files that the service then cannot
//! open. Such a run is refused with the command that runs it as that user instead.
//!
//! [`foreign_owner`] decides (pure, unit-tested); [`refuse_root_over_service_files`] reads the
//! owners and the effective uid.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use dxmirror::config::Config;
use dxmirror::dirs::user_name;

/// The first of `owned` (what, path, owner uid) that a process of effective uid `euid` must
/// not write as root: only root is refused, and only over a path another user owns.
pub(crate) fn foreign_owner<'a>(
    euid: u32,
    owned: &'a [(&'static str, PathBuf, u32)],
) -> Option<&'a (&'static str, PathBuf, u32)> {
    if euid != 0 {
        return None;
    }
    owned.iter().find(|(_, _, uid)| *uid != 0)
}

/// The command that runs `dxmirror <args>` as `user` with the token the service gets.
fn as_user_command(user: &str, token_file: &Path, args: &str) -> String {
    format!(
        "systemd-run --pty --wait --collect -p User={user} -p LoadCredential=dx-token:{} dxmirror {args}",
        token_file.display()
    )
}

/// Refuses (an error saying what to run instead) when this process is root and the state
/// directory or the mirror root, where they exist, belongs to another user. `args` is the
/// command line after `dxmirror`, to repeat in the advice.
pub(crate) fn refuse_root_over_service_files(cfg: &Config, args: &str) -> anyhow::Result<()> {
    let mut owned = Vec::new();
    for (what, path) in [
        ("state-dir", &cfg.state_dir),
        ("mirror-root", &cfg.mirror_root),
    ] {
        if let Ok(meta) = std::fs::metadata(path) {
            owned.push((what, path.clone(), meta.uid()));
        }
    }
    let euid = rustix::process::geteuid().as_raw();
    let Some((what, path, uid)) = foreign_owner(euid, &owned) else {
        return Ok(());
    };
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(*uid))
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name);
    let token = cfg
        .token_file
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/dxmirror/token"));
    anyhow::bail!(
        "{what} {} belongs to {}: run as root, this would leave root-owned files that user cannot open; \
         run it as that user instead:\n  {}",
        path.display(),
        user_name(*uid),
        as_user_command(&name, &token, args)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_over_another_users_directory_is_refused() {
        let owned = vec![
            ("state-dir", PathBuf::from("/var/lib/dxmirror"), 0),
            ("mirror-root", PathBuf::from("/srv/stjude"), 998),
        ];
        assert_eq!(foreign_owner(0, &owned).map(|o| o.2), Some(998));
        assert_eq!(foreign_owner(998, &owned), None);
        assert_eq!(foreign_owner(1000, &owned), None);
        let root_only = vec![("state-dir", PathBuf::from("/var/lib/d"), 0)];
        assert_eq!(foreign_owner(0, &root_only), None);
        assert_eq!(foreign_owner(0, &[]), None);
    }

    #[test]
    fn the_advice_runs_the_same_command_as_the_user_with_the_services_credential() {
        assert_eq!(
            as_user_command("dxmirror", Path::new("/etc/dxmirror/token"), "sync --config /etc/dxmirror/config.toml"),
            "systemd-run --pty --wait --collect -p User=dxmirror -p LoadCredential=dx-token:/etc/dxmirror/token dxmirror sync --config /etc/dxmirror/config.toml"
        );
        assert_eq!(user_name(0), "root (uid 0)");
    }
}
