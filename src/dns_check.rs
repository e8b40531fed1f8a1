//! DNS propagation check: wait until every dns-01 TXT value is visible before the CA
//! is asked to validate.
//!
//! Four ways to check ([`DnsCheck`], parsed from `--dns-check`):
//!
//! - `none`: no check.
//! - `wait=DURATION`: sleep that long, ask nothing.
//! - `servers=IP[:PORT],…`: ask exactly these servers (port 53 unless given). They may be
//!   authoritative servers or recursive resolvers, so queries are sent **with recursion
//!   desired**: an authoritative server ignores the flag for its own zones, and a
//!   resolver needs it to look the name up at all instead of answering from its cache
//!   only. A resolver caches what it sees, negative answers included, so pointing at one
//!   measures what *its* clients see, which can lag behind the authoritative servers.
//! - `authoritative`: find the zone of each name (walk up its labels asking the
//!   recursive resolver for an SOA record owned by that exact name), look up the zone's
//!   NS host names and their addresses, and ask every one of them directly, with
//!   recursion desired off. A zone that cannot be found (the resolver answers NOTIMP,
//!   REFUSED…, or no parent name has an SOA) ends the check at once with
//!   [`DnsCheckError::ZoneNotFound`]; it is not retried.
//!
//! Queries go over UDP (EDNS, 1232-byte payload) and are repeated over TCP when the
//! answer is truncated. A check polls until **every** expected value is visible at
//! **every** server asked — a wildcard and its apex share one name, so both values must
//! be there together — with a growing pause (1 s, 2 s, 4 s … at most 10 s), bounded by
//! the timeout. Each round that is still incomplete is logged (what is missing where).
//!
//! CNAMEs are followed: when `_acme-challenge.example.com.` is a CNAME, the TXT values are
//! expected at its target (chains of up to [`MAX_CNAME_CHAIN`] links; a loop is an error).
//! Every server asked must agree on the CNAME before it is followed. In `servers=` mode
//! the same servers are asked about the target; in `authoritative` mode the target's own
//! zone is looked up and its name servers are asked. The chain is logged and reported.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// The most CNAME links followed from one name before giving up.
pub const MAX_CNAME_CHAIN: usize = 8;

/// The first pause between two rounds of queries; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest pause between two rounds of queries.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long one query (one UDP exchange, or one TCP exchange) may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// The least time given to the queries of the last round, even when the deadline is
/// (nearly) reached: the last round may overrun the timeout by at most this much.
const LAST_ROUND_GRACE: Duration = Duration::from_millis(500);
/// EDNS UDP payload size announced (the DNS flag day 2020 recommendation).
const EDNS_PAYLOAD: u16 = 1232;
/// The port authoritative name servers are asked on.
const DNS_PORT: u16 = 53;

/// How to make sure the TXT records are visible before the CA looks (`--dns-check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsCheck {
    /// `none`: no check at all.
    None,
    /// `wait=DURATION`: sleep this long, ask no server.
    Wait(Duration),
    /// `servers=IP[:PORT],…`: ask exactly these servers (recursion desired).
    Servers(Vec<SocketAddr>),
    /// `authoritative`: ask every authoritative name server of each name's zone.
    Authoritative,
}

/// A `--dns-check` value that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseDnsCheckError {
    /// Not one of the known forms.
    #[error(
        "unknown DNS check {0:?}: expected none, authoritative, wait=DURATION (e.g. wait=90s) \
         or servers=IP[:PORT],… (e.g. servers=192.0.2.1,192.0.2.2:5353)"
    )]
    Unknown(String),
    /// `wait=` with something that is not a duration.
    #[error("invalid duration {value:?} in wait=: {reason} (e.g. wait=90s, wait=2m)")]
    Duration {
        /// What followed `wait=`.
        value: String,
        /// Why it is not a duration.
        reason: String,
    },
    /// `servers=` without any server.
    #[error("servers= needs at least one IP address (e.g. servers=192.0.2.1,192.0.2.2:5353)")]
    NoServers,
    /// A `servers=` entry that is not an IP address with an optional port.
    #[error(
        "invalid server {0:?} in servers=: expected IP or IP:PORT, an IPv6 address with a \
         port in brackets ([2001:db8::1]:53); host names are not accepted"
    )]
    Server(String),
}

impl FromStr for DnsCheck {
    type Err = ParseDnsCheckError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text == "none" {
            return Ok(Self::None);
        }
        if text == "authoritative" {
            return Ok(Self::Authoritative);
        }
        if let Some(value) = text.strip_prefix("wait=") {
            return humantime::parse_duration(value.trim())
                .map(Self::Wait)
                .map_err(|e| ParseDnsCheckError::Duration {
                    value: value.to_owned(),
                    reason: e.to_string(),
                });
        }
        if let Some(list) = text.strip_prefix("servers=") {
            let mut servers = Vec::new();
            for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                let server = parse_server(entry)?;
                if !servers.contains(&server) {
                    servers.push(server);
                }
            }
            if servers.is_empty() {
                return Err(ParseDnsCheckError::NoServers);
            }
            return Ok(Self::Servers(servers));
        }
        Err(ParseDnsCheckError::Unknown(text.to_owned()))
    }
}

/// `IP` (port 53) or `IP:PORT` (`[IPv6]:PORT`).
fn parse_server(entry: &str) -> Result<SocketAddr, ParseDnsCheckError> {
    if let Ok(address) = entry.parse::<SocketAddr>() {
        return Ok(address);
    }
    let bare = entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .unwrap_or(entry);
    bare.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
        .map_err(|_| ParseDnsCheckError::Server(entry.to_owned()))
}

/// The same text [`FromStr`] accepts (`wait=1m 30s`, `servers=192.0.2.1:53,[::1]:5353`).
impl fmt::Display for DnsCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Authoritative => f.write_str("authoritative"),
            Self::Wait(duration) => write!(f, "wait={}", humantime::format_duration(*duration)),
            Self::Servers(servers) => {
                f.write_str("servers=")?;
                for (i, server) in servers.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{server}")?;
                }
                Ok(())
            }
        }
    }
}

/// TXT values that must be visible together under one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// The record's name, `_acme-challenge.example.com.` (the trailing dot is optional).
    pub name: String,
    /// Every TXT value that must be there (a wildcard and its apex: two values).
    pub values: Vec<String>,
}

/// Where the check's own lookups go. [`Resolvers::default`] is the system's
/// configuration (`/etc/resolv.conf`) and port 53.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolvers {
    /// The recursive resolver(s) `authoritative` mode asks for SOA, NS and address
    /// records; `None` for the system's.
    pub recursive: Option<Vec<SocketAddr>>,
    /// The port the authoritative name servers are asked on (53; tests use others).
    pub authoritative_port: u16,
}

impl Default for Resolvers {
    fn default() -> Self {
        Self {
            recursive: None,
            authoritative_port: DNS_PORT,
        }
    }
}

/// What a successful check saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// One entry per distinct expected name, in the order given; empty for `none` and
    /// `wait=`.
    pub names: Vec<NameReport>,
    /// How long the check took.
    pub elapsed: Duration,
}

/// Where the values of one name were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameReport {
    /// The expected name, as a FQDN (`_acme-challenge.example.com.`).
    pub name: String,
    /// The CNAME targets followed from `name`, in order; empty when it is no CNAME.
    pub cname_chain: Vec<String>,
    /// The name whose TXT values were checked: the chain's last target, else `name`.
    pub checked_name: String,
    /// The servers that all had every value there (`192.0.2.1:53`, or
    /// `ns1.example.com. (192.0.2.1:53)` in `authoritative` mode).
    pub servers: Vec<String>,
}

/// Why the check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsCheckError {
    /// An expected name is not a valid DNS name.
    #[error("invalid DNS name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it is not valid.
        reason: String,
    },
    /// `servers=` with an empty list.
    #[error("the DNS check has no server to ask")]
    NoServers,
    /// The recursive resolver could not be set up (for example `/etc/resolv.conf`).
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(String),
    /// `authoritative`: the zone of a name could not be found.
    #[error("cannot find the DNS zone of {name}: {reason}")]
    ZoneNotFound {
        /// The name whose zone was looked for.
        name: String,
        /// What went wrong, naming the resolver and its answer.
        reason: String,
    },
    /// `authoritative`: the zone was found but none of its name servers can be asked.
    #[error("cannot find the name servers of zone {zone}: {reason}")]
    NameServers {
        /// The zone.
        zone: String,
        /// What went wrong.
        reason: String,
    },
    /// A CNAME chain leads back to a name already in it.
    #[error("{name} is a CNAME chain that loops: {}", .chain.join(" → "))]
    CnameLoop {
        /// The expected name.
        name: String,
        /// The chain, starting with `name` and ending with the repeated name.
        chain: Vec<String>,
    },
    /// A CNAME chain longer than [`MAX_CNAME_CHAIN`].
    #[error("{name} is a CNAME chain of more than {MAX_CNAME_CHAIN} links: {}", .chain.join(" → "))]
    CnameChainTooLong {
        /// The expected name.
        name: String,
        /// The chain followed so far, starting with `name`.
        chain: Vec<String>,
    },
    /// The timeout passed before every value was visible everywhere.
    #[error("after {}, {}", humantime::format_duration(*.after), join_missing(.missing))]
    NotVisible {
        /// The timeout.
        after: Duration,
        /// What was still missing where, from the last round.
        missing: Vec<Missing>,
    },
}

fn join_missing(missing: &[Missing]) -> String {
    missing
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Something one server did not show yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The name asked (after following CNAMEs), `_acme-challenge.example.com.`.
    pub name: String,
    /// The server asked, `127.0.0.1:53` or `ns1.example.com. (192.0.2.1:53)`.
    pub server: String,
    /// What is missing.
    pub gap: Gap,
}

/// What one server did not show yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gap {
    /// It answered, without some of the values.
    Lacks {
        /// The expected values it does not have.
        lacks: Vec<String>,
        /// All the TXT values it has at that name.
        has: Vec<String>,
    },
    /// It gave no usable answer (timeout, SERVFAIL, REFUSED…).
    NoAnswer {
        /// Why.
        reason: String,
    },
    /// The servers disagree on whether, or where to, the name is a CNAME.
    CnameMismatch {
        /// This server's CNAME target, `None` when it has no CNAME there.
        target: Option<String>,
    },
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { name, server, gap } = self;
        match gap {
            Gap::Lacks { lacks, has } => {
                let plural = if lacks.len() == 1 { "" } else { "s" };
                let lacks = lacks
                    .iter()
                    .map(|v| format!("{v:?}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                write!(
                    f,
                    "{name} at {server} still lacks TXT value{plural} {lacks} (it has: {has:?})"
                )
            }
            Gap::NoAnswer { reason } => {
                write!(f, "{name} at {server} gave no usable answer ({reason})")
            }
            Gap::CnameMismatch {
                target: Some(target),
            } => write!(
                f,
                "{name} at {server} is a CNAME to {target}, other servers disagree"
            ),
            Gap::CnameMismatch { target: None } => write!(
                f,
                "{name} at {server} is not a CNAME, other servers say it is"
            ),
        }
    }
}

/// Waits until every expected TXT value is visible, as `check` asks.
///
/// `timeout` bounds the polling of `servers=` and `authoritative` (the last round may
/// overrun it by half a second); `wait=` sleeps its own duration and `none` returns at
/// once. Expectations with the same name are merged. `resolvers` says where
/// `authoritative` mode looks zones and name servers up.
pub async fn wait_until_visible(
    check: &DnsCheck,
    expected: &[Expectation],
    timeout: Duration,
    resolvers: &Resolvers,
) -> Result<Report, DnsCheckError> {
    let started = Instant::now();
    let targets = merge_expectations(expected)?;
    let mut view = match check {
        DnsCheck::None => {
            debug!("DNS propagation check: none");
            return Ok(Report {
                names: Vec::new(),
                elapsed: started.elapsed(),
            });
        }
        DnsCheck::Wait(duration) => {
            info!(
                "waiting {} for DNS propagation (--dns-check {check})",
                humantime::format_duration(*duration)
            );
            tokio::time::sleep(*duration).await;
            return Ok(Report {
                names: Vec::new(),
                elapsed: started.elapsed(),
            });
        }
        DnsCheck::Servers(servers) if servers.is_empty() => return Err(DnsCheckError::NoServers),
        DnsCheck::Servers(servers) => View::Fixed(
            servers
                .iter()
                .map(|&addr| Server {
                    addrs: vec![addr],
                    host: None,
                })
                .collect(),
        ),
        DnsCheck::Authoritative => View::Authoritative(Box::new(Discovery::new(resolvers)?)),
    };
    let recursion_desired = matches!(view, View::Fixed(_));
    if targets.is_empty() {
        return Ok(Report {
            names: Vec::new(),
            elapsed: started.elapsed(),
        });
    }

    let deadline = started + timeout;
    let mut backoff = FIRST_BACKOFF;
    let mut announced = HashSet::new();
    loop {
        let query_timeout = QUERY_TIMEOUT
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(LAST_ROUND_GRACE);
        let mut visible = Vec::new();
        let mut missing = Vec::new();
        for target in &targets {
            let round = Round {
                recursion_desired,
                query_timeout,
                deadline: deadline.max(Instant::now() + LAST_ROUND_GRACE),
            };
            match check_name(target, &mut view, &round, &mut announced).await? {
                NameState::Visible(report) => visible.push(report),
                NameState::Pending(gaps) => missing.extend(gaps),
            }
        }
        if missing.is_empty() {
            for report in &visible {
                info!(
                    "DNS check: every TXT value of {} is visible at {}",
                    report.checked_name,
                    report.servers.join(", ")
                );
            }
            return Ok(Report {
                names: visible,
                elapsed: started.elapsed(),
            });
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(DnsCheckError::NotVisible {
                after: timeout,
                missing,
            });
        }
        let pause = backoff.min(deadline - now);
        info!(
            "DNS not propagated yet, checking again in {}: {}",
            humantime::format_duration(Duration::from_millis(
                u64::try_from(pause.as_millis()).unwrap_or(u64::MAX)
            )),
            join_missing(&missing)
        );
        tokio::time::sleep(pause).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One expected name with all its values.
struct Target {
    name: Name,
    values: Vec<String>,
}

fn merge_expectations(expected: &[Expectation]) -> Result<Vec<Target>, DnsCheckError> {
    let mut targets: Vec<Target> = Vec::new();
    for expectation in expected {
        let name = parse_fqdn(&expectation.name)?;
        let at = match targets.iter().position(|t| t.name == name) {
            Some(at) => at,
            None => {
                targets.push(Target {
                    name,
                    values: Vec::new(),
                });
                targets.len() - 1
            }
        };
        for value in &expectation.values {
            if !targets[at].values.contains(value) {
                targets[at].values.push(value.clone());
            }
        }
    }
    Ok(targets)
}

fn parse_fqdn(text: &str) -> Result<Name, DnsCheckError> {
    let invalid = |reason: String| DnsCheckError::InvalidName {
        name: text.to_owned(),
        reason,
    };
    if !text.is_ascii() {
        return Err(invalid("not ASCII (use the xn-- form)".into()));
    }
    let mut name = Name::from_ascii(text).map_err(|e| invalid(e.to_string()))?;
    if name.is_root() {
        return Err(invalid("the root is not a record name".into()));
    }
    name.set_fqdn(true);
    Ok(name)
}

/// A server asked directly: one address in `servers=` mode; in `authoritative` mode a
/// name server host with all its addresses (IPv4 first), of which the first that
/// answers counts — a host's IPv6 address is no reason to fail on a machine without
/// IPv6.
#[derive(Debug, Clone)]
struct Server {
    addrs: Vec<SocketAddr>,
    /// The NS host name, in `authoritative` mode.
    host: Option<Name>,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addrs = self
            .addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        match &self.host {
            Some(host) => write!(f, "{host} ({addrs})"),
            None => f.write_str(&addrs),
        }
    }
}

/// Which servers to ask about a name.
enum View {
    /// `servers=`: the same servers for every name.
    Fixed(Vec<Server>),
    /// `authoritative`: the name servers of the name's zone.
    Authoritative(Box<Discovery>),
}

impl View {
    async fn servers_for(
        &mut self,
        name: &Name,
        deadline: Instant,
    ) -> Result<Vec<Server>, DnsCheckError> {
        match self {
            Self::Fixed(servers) => Ok(servers.clone()),
            Self::Authoritative(discovery) => discovery.servers_for(name, deadline).await,
        }
    }
}

/// Settings shared by every query of one round.
struct Round {
    recursion_desired: bool,
    query_timeout: Duration,
    /// When discovery lookups must give up.
    deadline: Instant,
}

enum NameState {
    Visible(NameReport),
    Pending(Vec<Missing>),
}

/// One round for one name: follow its CNAMEs (every server must agree), then compare.
async fn check_name(
    target: &Target,
    view: &mut View,
    round: &Round,
    announced: &mut HashSet<(Name, Name)>,
) -> Result<NameState, DnsCheckError> {
    let mut hop = target.name.clone();
    let mut chain: Vec<Name> = Vec::new();
    loop {
        let servers = view.servers_for(&hop, round.deadline).await?;
        let observations =
            ask_all(&servers, &hop, round.recursion_desired, round.query_timeout).await;
        let cnames: Vec<&Name> = observations
            .iter()
            .filter_map(|(_, o)| match o {
                Observation::Cname(t) => Some(t),
                _ => None,
            })
            .collect();
        if let Some(&next) = cnames.first() {
            let agreed = cnames.len() == observations.len() && cnames.iter().all(|t| *t == next);
            if !agreed {
                let missing = observations
                    .iter()
                    .map(|(server, observation)| Missing {
                        name: hop.to_string(),
                        server: server.to_string(),
                        gap: match observation {
                            Observation::Cname(t) => Gap::CnameMismatch {
                                target: Some(t.to_string()),
                            },
                            Observation::Txt(_) => Gap::CnameMismatch { target: None },
                            Observation::Failed(reason) => Gap::NoAnswer {
                                reason: reason.clone(),
                            },
                        },
                    })
                    .collect();
                return Ok(NameState::Pending(missing));
            }
            let next = next.clone();
            let full_chain = |last: &Name| -> Vec<String> {
                std::iter::once(&target.name)
                    .chain(&chain)
                    .chain(std::iter::once(last))
                    .map(ToString::to_string)
                    .collect()
            };
            if next == target.name || chain.contains(&next) {
                return Err(DnsCheckError::CnameLoop {
                    name: target.name.to_string(),
                    chain: full_chain(&next),
                });
            }
            if chain.len() >= MAX_CNAME_CHAIN {
                return Err(DnsCheckError::CnameChainTooLong {
                    name: target.name.to_string(),
                    chain: full_chain(&next),
                });
            }
            if announced.insert((hop.clone(), next.clone())) {
                info!("{hop} is a CNAME to {next}; checking there");
            }
            chain.push(next.clone());
            hop = next;
            continue;
        }

        let mut missing = Vec::new();
        for (server, observation) in &observations {
            let gap = match observation {
                Observation::Txt(has) => {
                    let lacks: Vec<String> = target
                        .values
                        .iter()
                        .filter(|v| !has.contains(v))
                        .cloned()
                        .collect();
                    if lacks.is_empty() {
                        continue;
                    }
                    Gap::Lacks {
                        lacks,
                        has: has.clone(),
                    }
                }
                Observation::Failed(reason) => Gap::NoAnswer {
                    reason: reason.clone(),
                },
                // Not reached: a CNAME answer was handled above.
                Observation::Cname(t) => Gap::CnameMismatch {
                    target: Some(t.to_string()),
                },
            };
            missing.push(Missing {
                name: hop.to_string(),
                server: server.to_string(),
                gap,
            });
        }
        if !missing.is_empty() {
            return Ok(NameState::Pending(missing));
        }
        return Ok(NameState::Visible(NameReport {
            name: target.name.to_string(),
            cname_chain: chain.iter().map(ToString::to_string).collect(),
            checked_name: hop.to_string(),
            servers: servers.iter().map(ToString::to_string).collect(),
        }));
    }
}

/// What one server says about one name.
#[derive(Debug)]
enum Observation {
    /// Its TXT values (each record's character-strings joined), possibly none.
    Txt(Vec<String>),
    /// The name is a CNAME to this target.
    Cname(Name),
    /// No usable answer.
    Failed(String),
}

/// Asks every server for the TXT records of `name` at once; answers in server order.
async fn ask_all(
    servers: &[Server],
    name: &Name,
    recursion_desired: bool,
    timeout: Duration,
) -> Vec<(Server, Observation)> {
    let mut tasks = JoinSet::new();
    for (index, server) in servers.iter().enumerate() {
        let server = server.clone();
        let name = name.clone();
        tasks.spawn(async move {
            let observation = observe(&server, &name, recursion_desired, timeout).await;
            debug!("TXT {name} at {server}: {observation:?}");
            (index, server, observation)
        });
    }
    let mut answers = Vec::with_capacity(servers.len());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(answer) => answers.push(answer),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    answers.sort_by_key(|(index, _, _)| *index);
    answers
        .into_iter()
        .map(|(_, server, observation)| (server, observation))
        .collect()
}

/// Asks `server` (its addresses in turn, until one answers usefully) for `name`'s TXT.
async fn observe(
    server: &Server,
    name: &Name,
    recursion_desired: bool,
    timeout: Duration,
) -> Observation {
    let mut failures = Vec::new();
    for &addr in &server.addrs {
        match query(addr, name, RecordType::TXT, recursion_desired, timeout).await {
            Ok(response)
                if matches!(
                    response.metadata.response_code,
                    ResponseCode::NoError | ResponseCode::NXDomain
                ) =>
            {
                return read_answer(&response, name);
            }
            Ok(response) => failures.push((addr, rcode_text(response.metadata.response_code))),
            Err(reason) => failures.push((addr, reason)),
        }
    }
    let reasons = if let [(_, reason)] = failures.as_slice() {
        reason.clone()
    } else {
        failures
            .iter()
            .map(|(addr, reason)| format!("{addr}: {reason}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    Observation::Failed(reasons)
}

/// The CNAME or the TXT values at `name` in a NOERROR or NXDOMAIN response.
fn read_answer(response: &Message, name: &Name) -> Observation {
    // A CNAME at the name itself: its target holds the data (RFC 1034 §3.6.2).
    for record in &response.answers {
        if let RData::CNAME(cname) = &record.data
            && record.name == *name
        {
            let mut target = cname.0.clone();
            target.set_fqdn(true);
            return Observation::Cname(target);
        }
    }
    let values = response
        .answers
        .iter()
        .filter(|record| record.name == *name)
        .filter_map(|record| match &record.data {
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|part| String::from_utf8_lossy(part))
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect();
    Observation::Txt(values)
}

/// `NOTIMP (Not Implemented)`.
fn rcode_text(rcode: ResponseCode) -> String {
    let mnemonic = match rcode {
        ResponseCode::FormErr => "FORMERR".to_owned(),
        ResponseCode::ServFail => "SERVFAIL".to_owned(),
        ResponseCode::NXDomain => "NXDOMAIN".to_owned(),
        ResponseCode::NotImp => "NOTIMP".to_owned(),
        ResponseCode::Refused => "REFUSED".to_owned(),
        other => format!("RCODE {}", u16::from(other)),
    };
    format!("{mnemonic} ({rcode})")
}

/// One question to one server: UDP first, TCP when the answer is truncated. A server
/// that rejects EDNS with FORMERR is asked again without it.
async fn query(
    server: SocketAddr,
    name: &Name,
    record_type: RecordType,
    recursion_desired: bool,
    timeout: Duration,
) -> Result<Message, String> {
    let mut response = None;
    for edns in [true, false] {
        let mut request = Message::query();
        request.metadata.recursion_desired = recursion_desired;
        request.add_query(Query::query(name.clone(), record_type));
        if edns {
            let mut options = Edns::new();
            options.set_max_payload(EDNS_PAYLOAD);
            request.set_edns(options);
        }
        let bytes = request
            .to_vec()
            .map_err(|e| format!("cannot encode the query: {e}"))?;
        let udp = tokio::time::timeout(timeout, exchange_udp(server, &bytes, &request))
            .await
            .map_err(|_| format!("no answer within {}", humantime::format_duration(timeout)))??;
        let answer = if udp.metadata.truncation {
            debug!("{name} at {server}: truncated over UDP, asking over TCP");
            tokio::time::timeout(timeout, exchange_tcp(server, &bytes, &request))
                .await
                .map_err(|_| {
                    format!(
                        "no answer over TCP within {}",
                        humantime::format_duration(timeout)
                    )
                })??
        } else {
            udp
        };
        let rejected_edns = edns && answer.metadata.response_code == ResponseCode::FormErr;
        response = Some(answer);
        if !rejected_edns {
            break;
        }
    }
    response.ok_or_else(|| "no answer".to_owned())
}

async fn exchange_udp(
    server: SocketAddr,
    bytes: &[u8],
    request: &Message,
) -> Result<Message, String> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    socket
        .connect(server)
        .await
        .map_err(|e| format!("UDP: {e}"))?;
    socket.send(bytes).await.map_err(|e| format!("UDP: {e}"))?;
    let mut buffer = vec![0u8; 65_535];
    loop {
        let len = socket
            .recv(&mut buffer)
            .await
            .map_err(|e| format!("UDP: {e}"))?;
        // A stray or forged datagram is ignored; the real answer may still come.
        match Message::from_vec(&buffer[..len]) {
            Ok(answer) if answers(request, &answer) => return Ok(answer),
            Ok(_) => debug!("ignoring a DNS message from {server} that answers another query"),
            Err(e) => debug!("ignoring an undecodable datagram from {server}: {e}"),
        }
    }
}

async fn exchange_tcp(
    server: SocketAddr,
    bytes: &[u8],
    request: &Message,
) -> Result<Message, String> {
    let mut stream = TcpStream::connect(server)
        .await
        .map_err(|e| format!("TCP: {e}"))?;
    let len = u16::try_from(bytes.len()).map_err(|_| "query too long for TCP".to_owned())?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream
        .write_all(&framed)
        .await
        .map_err(|e| format!("TCP: {e}"))?;
    let mut len = [0u8; 2];
    stream
        .read_exact(&mut len)
        .await
        .map_err(|e| format!("TCP: {e}"))?;
    let mut buffer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream
        .read_exact(&mut buffer)
        .await
        .map_err(|e| format!("TCP: {e}"))?;
    let answer =
        Message::from_vec(&buffer).map_err(|e| format!("undecodable answer over TCP: {e}"))?;
    if answers(request, &answer) {
        Ok(answer)
    } else {
        Err("the answer over TCP is for another query".to_owned())
    }
}

/// Whether `answer` is the response to `request` (same id, same question).
fn answers(request: &Message, answer: &Message) -> bool {
    answer.metadata.message_type == MessageType::Response
        && answer.metadata.id == request.metadata.id
        && (answer.queries.is_empty() || answer.queries == request.queries)
}

/// `authoritative` mode: zones and their name servers, looked up once per check.
struct Discovery {
    resolver: TokioResolver,
    /// `the system resolver` or `the resolver 127.0.0.1:53`, for messages.
    label: String,
    port: u16,
    /// The zone of each name asked about.
    zones: HashMap<Name, Name>,
    /// The name servers of each zone.
    servers: HashMap<Name, Vec<Server>>,
}

impl Discovery {
    fn new(resolvers: &Resolvers) -> Result<Self, DnsCheckError> {
        let setup = |e: NetError| DnsCheckError::Resolver(e.to_string());
        let (resolver, label) = match &resolvers.recursive {
            None => {
                let mut builder = TokioResolver::builder_tokio().map_err(setup)?;
                // Every address of each name server; IPv4 is asked first.
                builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
                (
                    builder.build().map_err(setup)?,
                    "the system resolver".to_owned(),
                )
            }
            Some(addresses) => {
                if addresses.is_empty() {
                    return Err(DnsCheckError::Resolver(
                        "the list of recursive resolvers is empty".into(),
                    ));
                }
                let name_servers = addresses
                    .iter()
                    .map(|address| {
                        let mut udp = ConnectionConfig::udp();
                        udp.port = address.port();
                        let mut tcp = ConnectionConfig::tcp();
                        tcp.port = address.port();
                        NameServerConfig::new(address.ip(), true, vec![udp, tcp])
                    })
                    .collect();
                let mut options = ResolverOpts::default();
                options.timeout = QUERY_TIMEOUT;
                options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
                let label = addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                (
                    TokioResolver::builder_with_config(
                        ResolverConfig::from_name_servers(name_servers),
                        TokioRuntimeProvider::default(),
                    )
                    .with_options(options)
                    .build()
                    .map_err(setup)?,
                    format!("the resolver {label}"),
                )
            }
        };
        Ok(Self {
            resolver,
            label,
            port: resolvers.authoritative_port,
            zones: HashMap::new(),
            servers: HashMap::new(),
        })
    }

    async fn servers_for(
        &mut self,
        name: &Name,
        deadline: Instant,
    ) -> Result<Vec<Server>, DnsCheckError> {
        let zone = match self.zones.get(name) {
            Some(zone) => zone.clone(),
            None => {
                let zone = self.zone_of(name, deadline).await?;
                info!("{name} is in zone {zone}");
                self.zones.insert(name.clone(), zone.clone());
                zone
            }
        };
        if let Some(servers) = self.servers.get(&zone) {
            return Ok(servers.clone());
        }
        let servers = self.name_servers(&zone, deadline).await?;
        info!(
            "zone {zone} has the name servers {}",
            servers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.servers.insert(zone, servers.clone());
        Ok(servers)
    }

    /// Walks up from `name` to the first name that owns an SOA record.
    async fn zone_of(&self, name: &Name, deadline: Instant) -> Result<Name, DnsCheckError> {
        let not_found = |reason: String| DnsCheckError::ZoneNotFound {
            name: name.to_string(),
            reason,
        };
        let mut candidate = name.clone();
        loop {
            let answer = tokio::time::timeout_at(
                deadline,
                self.resolver.lookup(candidate.clone(), RecordType::SOA),
            )
            .await
            .map_err(|_| {
                not_found(format!(
                    "{} did not answer the SOA query for {candidate} in time",
                    self.label
                ))
            })?;
            match answer {
                Ok(lookup) => {
                    let apex = lookup
                        .answers()
                        .iter()
                        .any(|r| r.name == candidate && matches!(r.data, RData::SOA(_)));
                    if apex {
                        return Ok(candidate);
                    }
                }
                // NXDOMAIN or no SOA here (a record name, or a name that does not exist
                // yet): the zone is further up.
                Err(e) if e.is_no_records_found() => {}
                Err(e) => {
                    return Err(not_found(format!(
                        "{} answered the SOA query for {candidate} with {}",
                        self.label,
                        describe(&e)
                    )));
                }
            }
            if candidate.num_labels() <= 1 {
                return Err(not_found(format!(
                    "{} knows no SOA record at any of its parent names",
                    self.label
                )));
            }
            candidate = candidate.base_name();
        }
    }

    /// The NS host names of `zone` and each one's addresses.
    async fn name_servers(
        &self,
        zone: &Name,
        deadline: Instant,
    ) -> Result<Vec<Server>, DnsCheckError> {
        let failed = |reason: String| DnsCheckError::NameServers {
            zone: zone.to_string(),
            reason,
        };
        let lookup =
            tokio::time::timeout_at(deadline, self.resolver.lookup(zone.clone(), RecordType::NS))
                .await
                .map_err(|_| {
                    failed(format!(
                        "{} did not answer the NS query in time",
                        self.label
                    ))
                })?
                .map_err(|e| {
                    failed(format!(
                        "{} answered the NS query with {}",
                        self.label,
                        describe(&e)
                    ))
                })?;
        let hosts: Vec<Name> = lookup
            .answers()
            .iter()
            .filter(|r| r.name == *zone)
            .filter_map(|r| match &r.data {
                RData::NS(ns) => Some(ns.0.clone()),
                _ => None,
            })
            .collect();
        if hosts.is_empty() {
            return Err(failed(format!("{} knows no NS record for it", self.label)));
        }
        let mut servers = Vec::new();
        let mut problems = Vec::new();
        for host in hosts {
            let addresses =
                tokio::time::timeout_at(deadline, self.resolver.lookup_ip(host.clone())).await;
            match addresses {
                Ok(Ok(addresses)) => {
                    let mut addrs: Vec<SocketAddr> = addresses
                        .iter()
                        .map(|ip| SocketAddr::new(ip, self.port))
                        .collect();
                    addrs.sort_by_key(SocketAddr::is_ipv6);
                    addrs.dedup();
                    if addrs.is_empty() {
                        problems.push(format!("{host}: no address"));
                    } else {
                        servers.push(Server {
                            addrs,
                            host: Some(host.clone()),
                        });
                    }
                }
                Ok(Err(e)) => {
                    warn!(
                        "cannot find the address of name server {host}: {}",
                        describe(&e)
                    );
                    problems.push(format!("{host}: {}", describe(&e)));
                }
                Err(_) => problems.push(format!("{host}: no address in time")),
            }
        }
        if servers.is_empty() {
            return Err(failed(format!(
                "no name server has an address ({})",
                problems.join("; ")
            )));
        }
        Ok(servers)
    }
}

/// A resolver error for messages: `NOTIMP (Not Implemented)`, `no records`, ….
fn describe(error: &NetError) -> String {
    match error {
        NetError::Dns(DnsError::ResponseCode(rcode)) => rcode_text(*rcode),
        NetError::Dns(DnsError::NoRecordsFound(no)) => {
            format!("no records ({})", rcode_text(no.response_code))
        }
        NetError::Timeout => "no answer (timed out)".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DnsCheck, ParseDnsCheckError> {
        text.parse()
    }

    #[test]
    fn parses_keywords() {
        assert_eq!(parse("none"), Ok(DnsCheck::None));
        assert_eq!(parse("authoritative"), Ok(DnsCheck::Authoritative));
        assert_eq!(parse(" authoritative "), Ok(DnsCheck::Authoritative));
    }

    #[test]
    fn parses_wait() {
        assert_eq!(
            parse("wait=90s"),
            Ok(DnsCheck::Wait(Duration::from_secs(90)))
        );
        assert_eq!(
            parse("wait=2m"),
            Ok(DnsCheck::Wait(Duration::from_secs(120)))
        );
        assert_eq!(
            parse("wait=1m 30s"),
            Ok(DnsCheck::Wait(Duration::from_secs(90)))
        );
        let error = parse("wait=soon").unwrap_err();
        assert!(matches!(error, ParseDnsCheckError::Duration { .. }));
        assert!(error.to_string().contains("\"soon\""), "{error}");
        assert!(matches!(
            parse("wait="),
            Err(ParseDnsCheckError::Duration { .. })
        ));
        // A bare number has no unit.
        assert!(matches!(
            parse("wait=90"),
            Err(ParseDnsCheckError::Duration { .. })
        ));
    }

    #[test]
    fn parses_servers() {
        assert_eq!(
            parse("servers=192.0.2.1,192.0.2.2:5353"),
            Ok(DnsCheck::Servers(vec![
                "192.0.2.1:53".parse().unwrap(),
                "192.0.2.2:5353".parse().unwrap(),
            ]))
        );
        assert_eq!(
            parse("servers=2001:db8::1, [2001:db8::2]:5353,[2001:db8::3]"),
            Ok(DnsCheck::Servers(vec![
                "[2001:db8::1]:53".parse().unwrap(),
                "[2001:db8::2]:5353".parse().unwrap(),
                "[2001:db8::3]:53".parse().unwrap(),
            ]))
        );
        // Duplicates are asked once.
        assert_eq!(
            parse("servers=192.0.2.1,192.0.2.1:53"),
            Ok(DnsCheck::Servers(vec!["192.0.2.1:53".parse().unwrap()]))
        );
    }

    #[test]
    fn rejects_bad_servers() {
        assert_eq!(parse("servers="), Err(ParseDnsCheckError::NoServers));
        assert_eq!(parse("servers= , "), Err(ParseDnsCheckError::NoServers));
        assert_eq!(
            parse("servers=ns1.example.com"),
            Err(ParseDnsCheckError::Server("ns1.example.com".into()))
        );
        assert_eq!(
            parse("servers=192.0.2.1:99999"),
            Err(ParseDnsCheckError::Server("192.0.2.1:99999".into()))
        );
        let error = parse("servers=192.0.2.1,nope").unwrap_err();
        assert!(error.to_string().contains("\"nope\""), "{error}");
    }

    #[test]
    fn rejects_unknown_forms() {
        for text in [
            "",
            "None",
            "auth",
            "servers",
            "wait",
            "dns",
            "authoritative=1",
        ] {
            let error = parse(text).unwrap_err();
            assert_eq!(error, ParseDnsCheckError::Unknown(text.trim().into()));
            let message = error.to_string();
            assert!(
                message.contains("none, authoritative, wait=DURATION"),
                "{message}"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for check in [
            DnsCheck::None,
            DnsCheck::Authoritative,
            DnsCheck::Wait(Duration::from_secs(90)),
            DnsCheck::Servers(vec![
                "192.0.2.1:53".parse().unwrap(),
                "[2001:db8::1]:5353".parse().unwrap(),
            ]),
        ] {
            let text = check.to_string();
            assert_eq!(parse(&text), Ok(check), "{text}");
        }
        assert_eq!(
            DnsCheck::Servers(vec!["192.0.2.1:53".parse().unwrap()]).to_string(),
            "servers=192.0.2.1:53"
        );
    }

    #[test]
    fn merges_expectations_by_name() {
        let targets = merge_expectations(&[
            Expectation {
                name: "_acme-challenge.Example.com".into(),
                values: vec!["a".into()],
            },
            Expectation {
                name: "_acme-challenge.example.com.".into(),
                values: vec!["b".into(), "a".into()],
            },
            Expectation {
                name: "_acme-challenge.other.test.".into(),
                values: vec!["c".into()],
            },
        ])
        .unwrap();
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0].name.to_string(), "_acme-challenge.Example.com.");
        assert_eq!(targets[0].values, ["a", "b"]);
        assert_eq!(targets[1].values, ["c"]);
        assert!(matches!(
            merge_expectations(&[Expectation {
                name: "bad..name".into(),
                values: vec![],
            }]),
            Err(DnsCheckError::InvalidName { .. })
        ));
    }

    #[tokio::test]
    async fn none_returns_at_once_and_wait_only_sleeps() {
        // Neither asks a server: the expected name's only server would be unreachable.
        let expected = [Expectation {
            name: "_acme-challenge.example.com.".into(),
            values: vec!["value".into()],
        }];
        let resolvers = Resolvers::default();

        let report = wait_until_visible(&DnsCheck::None, &expected, Duration::ZERO, &resolvers)
            .await
            .expect("none never fails");
        assert!(report.names.is_empty());
        assert!(report.elapsed < Duration::from_millis(100), "{report:?}");

        let wait = DnsCheck::Wait(Duration::from_millis(300));
        let report = wait_until_visible(&wait, &expected, Duration::ZERO, &resolvers)
            .await
            .expect("wait never fails");
        assert!(report.names.is_empty());
        assert!(report.elapsed >= Duration::from_millis(300), "{report:?}");
    }

    #[tokio::test]
    async fn an_empty_server_list_is_an_error() {
        let error = wait_until_visible(
            &DnsCheck::Servers(Vec::new()),
            &[],
            Duration::from_secs(1),
            &Resolvers::default(),
        )
        .await
        .expect_err("nothing to ask");
        assert_eq!(error, DnsCheckError::NoServers);
    }

    #[test]
    fn missing_reads_well() {
        let error = DnsCheckError::NotVisible {
            after: Duration::from_secs(120),
            missing: vec![
                Missing {
                    name: "_acme-challenge.example.com.".into(),
                    server: "127.0.0.1:53".into(),
                    gap: Gap::Lacks {
                        lacks: vec!["abc".into()],
                        has: vec!["old".into()],
                    },
                },
                Missing {
                    name: "_acme-challenge.example.com.".into(),
                    server: "ns1.example.com. (192.0.2.1:53)".into(),
                    gap: Gap::NoAnswer {
                        reason: "SERVFAIL (Server Failure)".into(),
                    },
                },
            ],
        };
        assert_eq!(
            error.to_string(),
            "after 2m, _acme-challenge.example.com. at 127.0.0.1:53 still lacks TXT value \
             \"abc\" (it has: [\"old\"]); _acme-challenge.example.com. at ns1.example.com. \
             (192.0.2.1:53) gave no usable answer (SERVFAIL (Server Failure))"
        );
    }
}
