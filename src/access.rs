//! The data-access agreement's clock: when a project's `access-expires` deserves a warning
//! (within [`EXPIRY_WARN_DAYS`]) or an error (passed), and how `status` and the daemon's
//! journal events word it.
//!
//! It also decides what an expired project's `on-access-expired` policy calls for today
//! ([`expiry_action`]: keep mirroring, hold, or purge once the grace period is over).
//!
//! Pure: it is given the dates and returns words and decisions. It must not log, write or
//! delete anything: the daemon acts on the decision (`daemon/expiry.rs`).

use crate::clock::Date;
use crate::model::ProjectId;

/// Warn this many days before a project's `access-expires`.
pub const EXPIRY_WARN_DAYS: i64 = 30;

/// What a project's access expiry calls for today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessNotice {
    /// Access ended before today.
    Expired {
        /// The `access-expires` date.
        on: Date,
    },
    /// Access ends within [`EXPIRY_WARN_DAYS`] (today counts as 0 days left).
    Soon {
        /// The `access-expires` date.
        on: Date,
        /// Whole days from today to `on`.
        days_left: i64,
    },
}

/// The notice for access that ends on `expires`, seen on `today`; `None` while it is further
/// away than [`EXPIRY_WARN_DAYS`].
pub fn access_notice(expires: Date, today: Date) -> Option<AccessNotice> {
    let left = expires.days - today.days;
    if left < 0 {
        Some(AccessNotice::Expired { on: expires })
    } else if left <= EXPIRY_WARN_DAYS {
        Some(AccessNotice::Soon {
            on: expires,
            days_left: left,
        })
    } else {
        None
    }
}

impl AccessNotice {
    /// The daemon's journal event for `project`.
    pub fn event_message(&self, project: &ProjectId) -> String {
        match *self {
            AccessNotice::Expired { on } => format!(
                "data access expired on {on}; the local copy is kept until `dxmirror purge {project} --yes`"
            ),
            AccessNotice::Soon { on, days_left } => {
                format!("data access expires on {on} ({days_left} days left)")
            }
        }
    }

    /// The warning `dxmirror status` shows for `project`.
    pub fn status_message(&self, project: &ProjectId) -> String {
        match *self {
            AccessNotice::Expired { on } => format!(
                "access expired on {on}: purge the local copy as the agreement requires (dxmirror purge {project} --yes)"
            ),
            AccessNotice::Soon { on, days_left } => {
                format!("access expires on {on} ({days_left} days left)")
            }
        }
    }
}

/// What the daemon does with a project once its `access-expires` has passed
/// (`on-access-expired`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnAccessExpired {
    /// Keep mirroring; only warn (log, journal event, `status`).
    Warn,
    /// Stop fetching and re-listing, keep the local copy (the default).
    #[default]
    Hold,
    /// Hold, then delete the local copy once the grace period is over (with the audit record
    /// `dxmirror purge` writes).
    Purge,
}

impl OnAccessExpired {
    /// Parses the config word: `warn`, `hold`, `purge`.
    pub fn parse(s: &str) -> Result<OnAccessExpired, String> {
        match s {
            "warn" => Ok(OnAccessExpired::Warn),
            "hold" => Ok(OnAccessExpired::Hold),
            "purge" => Ok(OnAccessExpired::Purge),
            other => Err(format!(
                "{other:?} is not one of \"warn\", \"hold\", \"purge\""
            )),
        }
    }

    /// The config word.
    pub fn as_str(self) -> &'static str {
        match self {
            OnAccessExpired::Warn => "warn",
            OnAccessExpired::Hold => "hold",
            OnAccessExpired::Purge => "purge",
        }
    }
}

/// What an expired (or not yet expired) project calls for today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryAction {
    /// Nothing: no date, not passed, or `warn` (mirroring goes on).
    Mirror,
    /// No fetching and no re-listing; the local copy stays.
    Hold,
    /// Held, and the local copy is deleted on `on` (the first day after the grace period).
    PurgeOn {
        /// The day the purge is due.
        on: Date,
    },
    /// Held, and the local copy is to be deleted now.
    PurgeNow,
}

impl ExpiryAction {
    /// Whether the project is held: no pass starts.
    pub fn holds(self) -> bool {
        self != ExpiryAction::Mirror
    }
}

/// What `policy` calls for on `today` for access that ends on `expires` (access is expired
/// from the day after), with a purge `grace_days` whole days after the first expired day.
pub fn expiry_action(
    expires: Option<Date>,
    today: Date,
    policy: OnAccessExpired,
    grace_days: i64,
) -> ExpiryAction {
    let Some(expires) = expires else {
        return ExpiryAction::Mirror;
    };
    if today.days <= expires.days {
        return ExpiryAction::Mirror;
    }
    match policy {
        OnAccessExpired::Warn => ExpiryAction::Mirror,
        OnAccessExpired::Hold => ExpiryAction::Hold,
        OnAccessExpired::Purge => {
            let on = Date {
                days: expires.days + 1 + grace_days.max(0),
            };
            if today.days >= on.days {
                ExpiryAction::PurgeNow
            } else {
                ExpiryAction::PurgeOn { on }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_holds_or_purges_after_the_grace_period() {
        let on = date("2027-05-01");
        let act = |today: &str, policy, grace| expiry_action(Some(on), date(today), policy, grace);
        use OnAccessExpired::*;
        // Not expired yet (the last day counts as access): every policy mirrors.
        for policy in [Warn, Hold, Purge] {
            assert_eq!(act("2027-05-01", policy, 0), ExpiryAction::Mirror);
        }
        assert_eq!(expiry_action(None, on, Purge, 0), ExpiryAction::Mirror);
        assert_eq!(act("2027-05-02", Warn, 0), ExpiryAction::Mirror);
        assert_eq!(act("2027-05-02", Hold, 0), ExpiryAction::Hold);
        assert_eq!(act("2099-01-01", Hold, 0), ExpiryAction::Hold);
        // No grace: purged on the first expired day.
        assert_eq!(act("2027-05-02", Purge, 0), ExpiryAction::PurgeNow);
        // Seven days of grace: held and announced until 2027-05-09, then purged.
        let due = ExpiryAction::PurgeOn {
            on: date("2027-05-09"),
        };
        assert_eq!(act("2027-05-02", Purge, 7), due);
        assert_eq!(act("2027-05-08", Purge, 7), due);
        assert!(due.holds() && !ExpiryAction::Mirror.holds());
        assert_eq!(act("2027-05-09", Purge, 7), ExpiryAction::PurgeNow);
        for w in ["warn", "hold", "purge"] {
            assert_eq!(OnAccessExpired::parse(w).unwrap().as_str(), w);
        }
        assert!(OnAccessExpired::parse("delete").is_err());
        assert_eq!(OnAccessExpired::default(), Hold);
    }

    fn date(s: &str) -> Date {
        Date::parse(s).expect("a valid date")
    }

    #[test]
    fn notices_start_thirty_days_ahead_and_turn_to_expired_the_day_after() {
        let on = date("2027-05-01");
        assert_eq!(access_notice(on, date("2027-03-31")), None);
        assert_eq!(
            access_notice(on, date("2027-04-01")),
            Some(AccessNotice::Soon { on, days_left: 30 })
        );
        assert_eq!(
            access_notice(on, date("2027-05-01")),
            Some(AccessNotice::Soon { on, days_left: 0 })
        );
        assert_eq!(
            access_notice(on, date("2027-05-02")),
            Some(AccessNotice::Expired { on })
        );
    }

    #[test]
    fn status_and_event_words() {
        let p: ProjectId = "project-B0vY9x9Q0b1QKq2F3Y4Z5a6b".parse().expect("an id");
        let on = date("2027-05-01");
        let soon = AccessNotice::Soon { on, days_left: 3 };
        assert_eq!(
            soon.status_message(&p),
            "access expires on 2027-05-01 (3 days left)"
        );
        assert_eq!(
            soon.event_message(&p),
            "data access expires on 2027-05-01 (3 days left)"
        );
        let gone = AccessNotice::Expired { on };
        assert_eq!(
            gone.status_message(&p),
            "access expired on 2027-05-01: purge the local copy as the agreement requires (dxmirror purge project-B0vY9x9Q0b1QKq2F3Y4Z5a6b --yes)"
        );
        assert_eq!(
            gone.event_message(&p),
            "data access expired on 2027-05-01; the local copy is kept until `dxmirror purge project-B0vY9x9Q0b1QKq2F3Y4Z5a6b --yes`"
        );
    }
}
