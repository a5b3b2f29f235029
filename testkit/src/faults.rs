//! Faults a test inflicts on a server, as a machine or a network would: its sshd and every
//! connection and session it serves killed at once, or frozen mid-exchange (a partition, a
//! machine that stops answering) and thawed again.

use crate::process::{process_tree, signal};
use crate::server::Server;

impl Server {
    /// sshd and everything it runs: the listener, each connection, each session.
    pub(crate) fn sshd_tree(&self) -> Vec<u32> {
        self.sshd
            .as_ref()
            .map_or(Vec::new(), |c| process_tree(c.id()))
    }

    /// The whole server goes down: sshd and every connection and session it serves.
    pub fn crash_sshd(&mut self) {
        let tree = self.sshd_tree();
        signal(&tree, "KILL");
        self.stop_sshd();
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) sshd and everything it runs.
    pub fn freeze(&self, frozen: bool) {
        signal(&self.sshd_tree(), if frozen { "STOP" } else { "CONT" });
    }
}
