//! Faults a test inflicts on a server, as a machine or a network would: its sshd and every
//! connection and session it serves killed at once, or frozen mid-exchange (a partition, a
//! machine that stops answering) and thawed again; or as a broken peer would: a verb
//! answered with whatever the test chose.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

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

impl Server {
    /// A peer gone wrong: `peer`'s key on this server runs a script instead of gitmirror's
    /// forced command. The script prints `output` (after reading its stdin) when the peer
    /// sends `verb`, and runs the real forced command for anything else, so pushes still
    /// work and only that verb is answered with whatever the test chose. It takes effect
    /// on the peer's next ssh login (an open connection keeps the command it logged in with).
    /// Called again, it only changes what the script prints.
    pub fn answer_peer_with(&self, peer: &str, verb: &str, output: &str) {
        let script = self.sshd_dir.path().join(format!("answer-{peer}.sh"));
        let data = self.sshd_dir.path().join(format!("answer-{peer}.txt"));
        fs::write(&data, output).unwrap();
        if script.exists() {
            return;
        }
        self.wrap_peer_command(peer, &script, |real| {
            format!(
                "#!/bin/sh\nif [ \"$SSH_ORIGINAL_COMMAND\" = '{verb}' ]; then\n  cat >/dev/null\n  cat '{}'\n  exit 0\nfi\nexec {real}\n",
                data.display()
            )
        });
    }

    /// A slave built before `verb` existed: `peer`'s commands starting with it are refused as
    /// such a build refuses an unknown command (`FATAL: unknown command "VERB"; ...`), and
    /// everything else runs as usual. Takes effect on the peer's next ssh login.
    pub fn forget_peer_verb(&self, peer: &str, verb: &str) {
        let script = self.sshd_dir.path().join(format!("old-{peer}.sh"));
        self.wrap_peer_command(peer, &script, |real| {
            format!(
                "#!/bin/sh\ncase \"$SSH_ORIGINAL_COMMAND\" in\n  {verb}*)\n    echo 'FATAL: unknown command \"{verb}\"; accepted: git-upload-pack, git-receive-pack, info, request-push' >&2\n    exit 1\n    ;;\n  *) exec {real} ;;\nesac\n"
            )
        });
    }

    /// A partition: every ssh login of `peers` to this server is let in but refused (as if
    /// the network between them were cut), until [`Server::heal`]. Takes effect on each
    /// peer's next login: stop the daemons that hold connections.
    pub fn cut_off_from(&self, peers: &[&str]) {
        let keys = self.home().join(".ssh/authorized_keys");
        let saved = self.sshd_dir.path().join("authorized_keys.whole");
        if !saved.exists() {
            fs::copy(&keys, &saved).unwrap();
        }
        for peer in peers {
            let script = self.sshd_dir.path().join(format!("cut-{peer}.sh"));
            self.wrap_peer_command(peer, &script, |_| {
                "#!/bin/sh\necho 'ssh: connect to host: Network is unreachable' >&2\nexit 255\n"
                    .to_string()
            });
        }
    }

    /// Ends what [`Server::cut_off_from`] did.
    pub fn heal(&self) {
        let saved = self.sshd_dir.path().join("authorized_keys.whole");
        if saved.exists() {
            fs::copy(&saved, self.home().join(".ssh/authorized_keys")).unwrap();
            fs::remove_file(saved).unwrap();
        }
    }

    /// A slow link from `peer`: what it sends to this server's `git-receive-pack` reaches git
    /// at about `kib_per_sec`, in small steps (it never stops flowing). Takes effect on the
    /// peer's next ssh login.
    pub fn throttle_pushes_from(&self, peer: &str, kib_per_sec: u32) {
        let script = self.sshd_dir.path().join(format!("throttle-{peer}.sh"));
        // 4 KiB steps; perl is part of every Debian system.
        let pause = 4.0 / f64::from(kib_per_sec.max(1));
        self.wrap_peer_command(peer, &script, |real| {
            format!(
                "#!/bin/sh\ncase \"$SSH_ORIGINAL_COMMAND\" in\n  git-receive-pack*|mirror-receive-pack*)\n    perl -e '$|=1; while (sysread(STDIN, $b, 4096)) {{ syswrite(STDOUT, $b); select(undef, undef, undef, {pause}) }}' | {real}\n    ;;\n  *) exec {real} ;;\nesac\n"
            )
        });
    }

    /// Replaces `peer`'s forced command in authorized_keys with `script`, written from
    /// `body` given the real command (which the script may still run).
    fn wrap_peer_command(&self, peer: &str, script: &Path, body: impl FnOnce(&str) -> String) {
        let keys = self.home().join(".ssh/authorized_keys");
        let text = fs::read_to_string(&keys).unwrap();
        let marker = format!(" peer {peer}\"");
        let line = text
            .lines()
            .find(|l| l.contains(&marker))
            .unwrap_or_else(|| panic!("no peer line for {peer}:\n{text}"));
        let start = line.find("command=\"").unwrap() + "command=\"".len();
        let end = start + line[start..].find('"').unwrap();
        let real = &line[start..end];
        fs::write(script, body(real)).unwrap();
        fs::set_permissions(script, fs::Permissions::from_mode(0o755)).unwrap();
        let changed = text.replacen(real, &script.display().to_string(), 1);
        fs::write(&keys, changed).unwrap();
    }
}
