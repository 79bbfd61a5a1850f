//! Throttling the way the platform does it: `423 Locked` answers of the API are waited out,
//! never a failure, and `sync` gives up on a call the platform keeps throttling only once
//! `throttle-budget` ran out, saying so.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use dxmirror::sandbox::{FaultConfig, FileSpec, PartSizes, ProjectSpec, SandboxOptions};

use crate::support::{assert_mirrored, served_env_with};

const MIB: u64 = 1 << 20;

fn options() -> SandboxOptions {
    let kind = dxmirror::sandbox::FileSpecKind::PartsMd5(PartSizes::Uniform(MIB));
    let p = ProjectSpec::new("throttled")
        .file(FileSpec::new("/", "a.bam", 2 * MIB).kind(kind.clone()))
        .file(FileSpec::new("/", "b.bam", MIB).kind(kind));
    SandboxOptions {
        dataset: dxmirror::sandbox::Dataset::build(41, vec![p]).unwrap(),
        ..SandboxOptions::default()
    }
}

#[tokio::test]
async fn locked_answers_are_waited_out_not_failures() {
    let (sandbox, project, env) = served_env_with(options(), "").await;
    sandbox.set_faults(FaultConfig::parse("api423=0.4,seed=3").unwrap());
    let summary = env.sync().await.unwrap();
    assert!(summary.is_ok(), "{summary:#?}");
    assert_eq!(assert_mirrored(&sandbox, &env, &project), 2);
    let stats = sandbox.stats();
    assert!(
        stats.faults_injected.get("api423").copied().unwrap_or(0) >= 1,
        "{stats:#?}"
    );
}

#[tokio::test]
async fn sync_says_that_its_throttle_budget_ran_out() {
    // The sandbox says `Retry-After: 1` to every call; a budget of 1s allows one wait.
    let (sandbox, _project, env) = served_env_with(options(), "throttle-budget = \"1s\"\n").await;
    sandbox.set_faults(FaultConfig::parse("api429=1").unwrap());
    let said = match env.sync().await {
        Ok(summary) => {
            assert!(!summary.is_ok(), "{summary:#?}");
            format!("{summary:?}")
        }
        Err(e) => e.to_string(),
    };
    assert!(said.contains("throttle-budget of 1s ran out"), "{said}");
    // It waited once, as told, before it gave up.
    assert!(
        sandbox
            .stats()
            .faults_injected
            .get("api429")
            .copied()
            .unwrap_or(0)
            >= 2
    );
}
