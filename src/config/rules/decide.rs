//! The access decision: which rule, of all that apply to a repo, decides what a user asks.
//!
//! gitolite's semantics, where administrators rely on them (docs/access.md): the rules of every
//! table that applies, in the order written; the first rule for the user whose refs match
//! decides, a `-` rule by denying; without a ref, `-` rules naming refs are skipped unless the
//! repo sets `deny_rules`. Every decision the server makes goes through [`Rules::decide`].

use super::grant::{Grant, Member};
use super::{Access, Rules};
use crate::names::{AccountName, RepoName};

/// What a user asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ask {
    /// Clone and fetch.
    Read,
    /// Push: fast-forward or create a ref.
    Write,
    /// Rewind, delete, or move a tag.
    Rewind,
    /// Create a ref (a letter of its own where the repo's rules use `C`).
    CreateRef,
    /// Delete a ref (a letter of its own where the repo's rules use `D`).
    DeleteRef,
    /// Create the repo itself (a pattern's `C`).
    CreateRepo,
}

impl Ask {
    /// The letter a rule's permission must contain, as `gitmirror access` takes it.
    pub(crate) fn letter(self) -> char {
        match self {
            Ask::Read => 'R',
            Ask::Write => 'W',
            Ask::Rewind => '+',
            Ask::CreateRef | Ask::CreateRepo => 'C',
            Ask::DeleteRef => 'D',
        }
    }

    /// The ask a letter stands for; `C` without a ref is creating the repo.
    pub(crate) fn from_letter(letter: &str, with_ref: bool) -> Option<Self> {
        Some(match letter {
            "R" => Ask::Read,
            "W" => Ask::Write,
            "+" => Ask::Rewind,
            "C" if with_ref => Ask::CreateRef,
            "C" => Ask::CreateRepo,
            "D" => Ask::DeleteRef,
            _ => return None,
        })
    }
}

/// Who a user-created repo's roles stand for: its creator and the users it gave roles to
/// (`perms`). Empty for every other repo.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RepoRoles {
    pub(crate) creator: Option<AccountName>,
    /// Role name (`READERS`, `WRITERS`) and the users holding it.
    pub(crate) roles: Vec<(String, Vec<AccountName>)>,
}

impl RepoRoles {
    fn holds(&self, role: &str, user: &AccountName) -> bool {
        self.roles
            .iter()
            .any(|(r, users)| r == role && users.contains(user))
    }
}

/// The rules that apply to one repo, in the order written, and what they make of its letters.
pub(crate) struct Applicable<'a> {
    rules: &'a Rules,
    grants: Vec<&'a Grant>,
    create_is_c: bool,
    delete_is_d: bool,
    deny_rules: bool,
}

impl Applicable<'_> {
    /// What these rules decide for `user` asking `ask`, for `refname` (a full ref name) or,
    /// without one, for the repo as a whole.
    pub(crate) fn decide(
        &self,
        user: &AccountName,
        ask: Ask,
        refname: Option<&str>,
        roles: &RepoRoles,
    ) -> Decision {
        let ask = match ask {
            Ask::CreateRef if !self.create_is_c => Ask::Write,
            Ask::DeleteRef if !self.delete_is_d => Ask::Rewind,
            a => a,
        };
        for g in self.grants.iter().copied() {
            if !self.rules.is_named(&g.who, user, roles, ask) {
                continue;
            }
            if g.is_deny() {
                let applies = match refname {
                    Some(r) => g.covers(r, user.as_str()),
                    None => g.refs.is_empty() || self.deny_rules,
                };
                if applies {
                    return Decision {
                        allowed: false,
                        by: Some(g.clone()),
                    };
                }
                continue;
            }
            if let Some(r) = refname
                && !g.covers(r, user.as_str())
            {
                continue;
            }
            let allows = match ask {
                Ask::CreateRepo => g.perm == "C",
                a => g.has(a.letter()),
            };
            if allows {
                return Decision {
                    allowed: true,
                    by: Some(g.clone()),
                };
            }
        }
        Decision {
            allowed: false,
            by: None,
        }
    }
}

/// What the rules decided, and the rule that did (none when no rule did: denied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) allowed: bool,
    pub(crate) by: Option<Grant>,
}

impl Rules {
    /// What the rules decide for `user` asking `ask` of `repo`, for `refname` (a full ref
    /// name) or, without one, for the repo as a whole.
    pub(crate) fn decide(
        &self,
        user: &AccountName,
        repo: &RepoName,
        ask: Ask,
        refname: Option<&str>,
        roles: &RepoRoles,
    ) -> Decision {
        let creator = match ask {
            // Creating: CREATOR in a pattern stands for the user asking.
            Ask::CreateRepo => Some(user.as_str()),
            _ => roles.creator.as_ref().map(|c| c.as_str()),
        };
        self.applicable(repo, creator)
            .decide(user, ask, refname, roles)
    }

    /// The rules that apply to `repo` (with `CREATOR` as `creator`), gathered once for many
    /// questions: a push asks one per ref, and the shells ask for three access levels.
    pub(crate) fn applicable(&self, repo: &RepoName, creator: Option<&str>) -> Applicable<'_> {
        let grants = self.grants_for(repo, creator);
        Applicable {
            rules: self,
            // gitolite's CREATE_IS_C and DELETE_IS_D: the letters count only where some rule
            // of the repo uses them; elsewhere a creation is a write and a deletion a rewind.
            create_is_c: grants
                .iter()
                .any(|g| g.perm.starts_with("RW") && g.has('C')),
            delete_is_d: grants.iter().any(|g| g.has('D')),
            deny_rules: self.deny_rules(repo, creator),
            grants,
        }
    }

    /// What `user` may do to `repo` as a whole: the highest of read, write and rewind the
    /// rules allow without naming a ref.
    pub(crate) fn access_with(
        &self,
        user: &AccountName,
        repo: &RepoName,
        roles: &RepoRoles,
    ) -> Access {
        let rules = self.applicable(repo, roles.creator.as_ref().map(|c| c.as_str()));
        [
            (Ask::Rewind, Access::Rewind),
            (Ask::Write, Access::Write),
            (Ask::Read, Access::Read),
        ]
        .into_iter()
        .find(|(ask, _)| rules.decide(user, *ask, None, roles).allowed)
        .map_or(Access::None, |(_, a)| a)
    }

    /// [`access_with`](Self::access_with) for a repo nobody created (no roles).
    pub(crate) fn access(&self, user: &AccountName, repo: &RepoName) -> Access {
        self.access_with(user, repo, &RepoRoles::default())
    }

    /// The patterns whose `C` names `user`: where they may create repos (for `info`).
    pub(crate) fn creatable(&self, user: &AccountName) -> Vec<&str> {
        let nobody = RepoRoles::default();
        self.patterns
            .iter()
            .filter(|(_, t)| {
                t.grants
                    .iter()
                    .any(|g| g.perm == "C" && self.is_named(&g.who, user, &nobody, Ask::CreateRepo))
            })
            .map(|(p, _)| p.as_str())
            .collect()
    }

    fn is_named(&self, who: &Member, user: &AccountName, roles: &RepoRoles, ask: Ask) -> bool {
        match who {
            Member::Everyone => true,
            Member::User(u) => u == user,
            Member::Group(g) => self.groups.get(g).is_some_and(|set| set.contains(user)),
            // Creating, the creator is the one asking.
            Member::Creator if ask == Ask::CreateRepo => true,
            Member::Creator => roles.creator.as_ref() == Some(user),
            Member::Role(r) => roles.holds(r, user),
        }
    }
}
