//! Test-only evaluator of rendered iptables-restore text: walks nat PREROUTING/OUTPUT (and
//! POSTROUTING for masquerade) then the filter hooks for one packet, with the matches and
//! targets this mode writes, so renderer tests assert behaviour (compared with
//! [`crate::trace`]) rather than text.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::render::Table;
use crate::model::{Cidr, RuleSet};
use crate::trace::{ArrivesOn, Packet, Verdict};

/// Chains of both tables, rules as tokens.
#[derive(Debug, Default, Clone)]
pub(super) struct Tables {
    chains: HashMap<(Table, String), Vec<Vec<String>>>,
}

fn tokens(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for ch in line.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

impl Tables {
    /// Applies restore text (as `--noflush` would) on top of the current state.
    pub(super) fn apply(&mut self, text: &str) {
        let mut table = Table::Nat;
        for line in text.lines() {
            if line == "*nat" {
                table = Table::Nat;
                continue;
            }
            if line == "*filter" {
                table = Table::Filter;
                continue;
            }
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap().to_owned();
                self.chains.insert((table, name), Vec::new());
                continue;
            }
            let t = tokens(line);
            if t.is_empty() || t[0] == "COMMIT" {
                continue;
            }
            let chain = (table, t[1].clone());
            match t[0].as_str() {
                "-A" => self.chains.entry(chain).or_default().push(t[2..].to_vec()),
                "-I" => {
                    let pos: usize = t[2].parse().unwrap();
                    self.chains
                        .entry(chain)
                        .or_default()
                        .insert(pos - 1, t[3..].to_vec());
                }
                "-C" => {
                    let rules = self.chains.get(&chain).expect("-C in a missing chain");
                    assert!(rules.iter().any(|r| r[..] == t[2..]), "-C failed: {line}");
                }
                "-D" => {
                    let rules = self.chains.get_mut(&chain).expect("-D in a missing chain");
                    let i = rules
                        .iter()
                        .position(|r| r[..] == t[2..])
                        .unwrap_or_else(|| panic!("-D of a missing rule: {line}"));
                    rules.remove(i);
                }
                "-X" => {
                    let gone = self.chains.remove(&chain).expect("-X of a missing chain");
                    assert!(gone.is_empty(), "-X of a non-empty chain {line}");
                    for (k, rules) in &self.chains {
                        for r in rules {
                            assert!(
                                !(k.0 == table && r.iter().any(|x| *x == t[1])),
                                "-X of {} still referenced from {}",
                                t[1],
                                k.1
                            );
                        }
                    }
                }
                other => panic!("unexpected command {other} in {line}"),
            }
        }
    }

    pub(super) fn chain(&self, table: Table, name: &str) -> Option<&Vec<Vec<String>>> {
        self.chains.get(&(table, name.to_owned()))
    }

    pub(super) fn chain_names(&self) -> Vec<(Table, String)> {
        let mut v: Vec<_> = self.chains.keys().cloned().collect();
        v.sort();
        v
    }
}

/// Injected randomness, clock and `-m recent` lists.
#[derive(Debug, Default, Clone)]
pub(super) struct EvalEnv {
    /// Picks the backend: with n endpoint rules in the chain, the `random % n`-th.
    pub(super) random: u64,
    pub(super) now_seconds: u64,
    pub(super) recent: HashMap<(String, IpAddr), u64>,
}

struct Walk<'a> {
    tables: &'a Tables,
    local: &'a [IpAddr],
    packet: Packet,
    dst: SocketAddr,
    mark: u32,
    env: &'a mut EvalEnv,
    point: Option<f64>,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Continue,
    Stop(Verdict),
}

impl Walk<'_> {
    fn is_local(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.local.contains(&ip)
    }

    fn walk(&mut self, table: Table, chain: &str) -> Outcome {
        let Some(rules) = self.tables.chain(table, chain) else {
            return Outcome::Continue;
        };
        self.point = None;
        let stat_rules = rules
            .iter()
            .filter(|r| r.iter().any(|t| t == "statistic"))
            .count();
        for rule in rules {
            if !self.matches(rule, stat_rules) {
                continue;
            }
            let Some(j) = rule.iter().position(|t| t == "-j") else {
                continue;
            };
            let target = rule[j + 1].as_str();
            match target {
                "RETURN" => return Outcome::Continue,
                "ACCEPT" => return Outcome::Stop(Verdict::Accept),
                "DROP" => return Outcome::Stop(Verdict::Drop),
                "REJECT" => return Outcome::Stop(Verdict::Reject),
                "MARK" => {
                    let v = u32::from_str_radix(rule[j + 3].trim_start_matches("0x"), 16).unwrap();
                    match rule[j + 2].as_str() {
                        "--or-mark" => self.mark |= v,
                        "--xor-mark" => self.mark ^= v,
                        other => panic!("MARK {other}"),
                    }
                }
                "MASQUERADE" => {
                    return Outcome::Stop(Verdict::Dnat {
                        to: self.dst,
                        masquerade: true,
                    });
                }
                "DNAT" => {
                    assert_eq!(rule[j + 2], "--to-destination");
                    let to: SocketAddr = rule[j + 3].parse().unwrap();
                    self.dst = to;
                    return Outcome::Stop(Verdict::Dnat {
                        to,
                        masquerade: false,
                    });
                }
                sub => {
                    let outcome = self.walk(table, sub);
                    if outcome != Outcome::Continue {
                        return outcome;
                    }
                }
            }
        }
        Outcome::Continue
    }

    fn matches(&mut self, rule: &[String], stat_rules: usize) -> bool {
        let mut i = 0;
        let mut negate = false;
        while i < rule.len() {
            let t = rule[i].as_str();
            let next = rule.get(i + 1).map(String::as_str).unwrap_or("");
            let ok = match t {
                "!" => {
                    negate = true;
                    i += 1;
                    continue;
                }
                "-j" => return true,
                "-m" | "--mode" | "--comment" | "--name" | "--reap" | "--rcheck" => {
                    i += if t == "--reap" || t == "--rcheck" {
                        1
                    } else {
                        2
                    };
                    continue;
                }
                "-p" => {
                    i += 2;
                    next == super::names::proto_lower(self.packet.proto)
                }
                "-d" => {
                    i += 2;
                    next.parse::<Cidr>().unwrap().contains(self.dst.ip())
                }
                "-s" => {
                    i += 2;
                    next.parse::<Cidr>().unwrap().contains(self.packet.src)
                }
                "--dport" => {
                    i += 2;
                    next.parse::<u16>().unwrap() == self.dst.port()
                }
                "--src-type" => {
                    i += 2;
                    self.is_local(self.packet.src)
                }
                "--dst-type" => {
                    i += 2;
                    self.is_local(self.dst.ip())
                }
                "--ctstate" => {
                    i += 2;
                    next.split(',').any(|s| s == "NEW")
                }
                "--mark" => {
                    i += 2;
                    let (v, m) = next.split_once('/').unwrap();
                    let v = u32::from_str_radix(v.trim_start_matches("0x"), 16).unwrap();
                    let m = u32::from_str_radix(m.trim_start_matches("0x"), 16).unwrap();
                    self.mark & m == v
                }
                "--probability" => {
                    i += 2;
                    let p: f64 = next.parse().unwrap();
                    let n = stat_rules as u64 + 1;
                    #[allow(clippy::cast_precision_loss)]
                    let x = *self
                        .point
                        .get_or_insert(((self.env.random % n) as f64 + 0.5) / n as f64);
                    if x < p {
                        true
                    } else {
                        self.point = Some((x - p) / (1.0 - p));
                        false
                    }
                }
                "--seconds" => {
                    i += 2;
                    let secs: u64 = next.parse().unwrap();
                    let name = rule[rule.iter().position(|t| t == "--name").unwrap() + 1].clone();
                    self.env
                        .recent
                        .get(&(name, self.packet.src))
                        .is_some_and(|seen| self.env.now_seconds.saturating_sub(*seen) <= secs)
                }
                "--set" => {
                    i += 1;
                    let name = rule[rule.iter().position(|t| t == "--name").unwrap() + 1].clone();
                    self.env
                        .recent
                        .insert((name, self.packet.src), self.env.now_seconds);
                    true
                }
                other => panic!("evaluator does not know {other} in {rule:?}"),
            };
            if ok == negate {
                return false;
            }
            negate = false;
        }
        true
    }
}

/// What the rendered `tables` do with `packet` (the node's addresses from `rules`).
pub(super) fn evaluate(
    tables: &Tables,
    rules: &RuleSet,
    packet: &Packet,
    env: &mut EvalEnv,
) -> Verdict {
    let local: Vec<IpAddr> = rules.node_port_addresses.iter().copied().collect();
    let mut w = Walk {
        tables,
        local: &local,
        packet: *packet,
        dst: SocketAddr::new(packet.dst, packet.dport),
        mark: 0,
        env,
        point: None,
    };
    let nat_hook = if packet.arrives_on == ArrivesOn::Local {
        "OUTPUT"
    } else {
        "PREROUTING"
    };
    let dnat = match w.walk(Table::Nat, nat_hook) {
        Outcome::Stop(Verdict::Dnat { to, .. }) => Some(to),
        Outcome::Continue => None,
        Outcome::Stop(v) => panic!("nat produced {v:?}"),
    };
    let dst_local = w.is_local(w.dst.ip());
    let hooks: &[&str] = match (packet.arrives_on, dst_local) {
        (ArrivesOn::Local, true) => &["OUTPUT", "INPUT"],
        (ArrivesOn::Local, false) => &["OUTPUT"],
        (_, true) => &["INPUT"],
        (_, false) => &["FORWARD"],
    };
    for hook in hooks {
        if let Outcome::Stop(v @ (Verdict::Drop | Verdict::Reject)) = w.walk(Table::Filter, hook) {
            return v;
        }
    }
    let masquerade = matches!(
        w.walk(Table::Nat, "POSTROUTING"),
        Outcome::Stop(Verdict::Dnat { .. })
    );
    match dnat {
        Some(to) => Verdict::Dnat { to, masquerade },
        None => Verdict::Accept,
    }
}
