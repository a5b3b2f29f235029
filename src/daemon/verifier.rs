//! Verify inside the daemon: asked by `gitmirror verify`, and by itself every
//! `mirror.verify_interval`. It asks the slaves over the daemon's own peer connections,
//! logs what differs, records the run for `status`, and hands repairs to the scheduler as
//! pushes that compare with the slave itself (never with what it last confirmed, which is
//! exactly what drift makes wrong).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::home::Home;
use crate::names::RepoName;
use crate::replicate::When;
use crate::replicate::mastered::{Mastered, NotMastered};
use crate::replicate::scheduler::{Outcome, Scheduler};
use crate::replicate::verify::{self, Finding, Verdict, record};
use crate::ssh::Pool;

/// What one run found, and the repairs it queued (with their outcomes, when waited for).
pub(crate) struct Run {
    pub(crate) findings: Vec<Finding>,
    pub(crate) repairs: Vec<(Finding, Option<oneshot::Receiver<Outcome>>)>,
}

/// Runs verify for the daemon.
pub(crate) struct Verifier {
    pub(crate) home: Home,
    pub(crate) mastered: Mastered,
    pub(crate) pool: Arc<Pool>,
    pub(crate) scheduler: Arc<Scheduler>,
}

impl Verifier {
    /// Verifies `only` (or every repo mastered here) on its slaves; with `repair`, queues a
    /// push for each repo that drifted or is missing, and with `wait` lets the caller wait
    /// for each.
    pub(crate) async fn run(
        &self,
        only: Option<&RepoName>,
        repair: bool,
        wait: bool,
    ) -> Result<Run, NotMastered> {
        let findings = verify::run(&self.mastered, &self.pool, only).await?;
        let mut counts = std::collections::BTreeMap::<&str, usize>::new();
        for f in &findings {
            *counts.entry(f.verdict.state()).or_default() += 1;
            let (repo, slave) = (&f.repo, &f.slave);
            match &f.verdict {
                Verdict::Ok => {}
                Verdict::Drifted(_) => {
                    let refs = f.verdict.words(slave);
                    warn!(%repo, %slave, %refs, repair, "slave has drifted from this master");
                }
                Verdict::Missing => warn!(%repo, %slave, repair, "slave is missing the repo"),
                Verdict::Refused(why) => warn!(%repo, %slave, error = %why, "slave refused verify"),
                // Said once per slave by `verify` itself.
                Verdict::Unreachable(_) => {}
                Verdict::Local(why) => error!(%repo, %slave, error = %why, "cannot verify"),
            }
        }
        info!(
            scope = only.map_or("all", RepoName::as_str),
            ?counts,
            "verified slaves"
        );
        let mut repairs = Vec::new();
        if repair {
            for f in findings.iter().filter(|f| f.verdict.repairable()) {
                let rx = self
                    .scheduler
                    .submit(&f.repo, &f.slave, When::IfDifferent, wait);
                repairs.push((f.clone(), rx));
            }
        }
        let (home, only) = (self.home.clone(), only.cloned());
        let repaired: Vec<Finding> = repairs.iter().map(|(f, _)| f.clone()).collect();
        let found = findings.clone();
        let saved = tokio::task::spawn_blocking(move || {
            record::save(&home, only.as_ref(), &found, &repaired)
        })
        .await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(error = %e, "cannot record what verify found"),
            Err(e) => error!(error = %e, "cannot record what verify found"),
        }
        Ok(Run { findings, repairs })
    }

    /// Verifies and repairs every repo mastered here every `every` (give or take a tenth,
    /// so that servers started together do not all ask at once), forever.
    pub(crate) async fn periodically(self: Arc<Self>, every: Duration) {
        loop {
            let jitter = 0.9 + 0.2 * fastrand::f64();
            tokio::time::sleep(every.mul_f64(jitter)).await;
            if let Err(e) = self.run(None, true, false).await {
                warn!(error = %e, "periodic verify failed");
            }
        }
    }
}
