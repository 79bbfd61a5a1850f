//! The data-access agreement's clock: when a project's `access-expires` deserves a warning
//! (within [`EXPIRY_WARN_DAYS`]) or an error (passed), and how `status` and the daemon's
//! journal events word it.
//!
//! Pure: it is given the dates and returns words. It must not log, write or delete anything:
//! an expired project keeps its local copy until `dxmirror purge` is run.

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

#[cfg(test)]
mod tests {
    use super::*;

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
