//! The DNS propagation check (`acme_bridge::dns_check`) against challtestsrv's real DNS
//! server: values already there, values that appear while polling, values that never
//! appear, a wildcard and its apex under one name, CNAMEs, and `authoritative` mode.
//!
//! challtestsrv answers NS and SOA with NOTIMP, so `authoritative` mode cannot discover
//! zones through it: one test shows the clear error that gives; another puts a small
//! in-test resolver in front that knows the zones (SOA, NS, the name servers' A records)
//! and sends the TXT questions to challtestsrv, which stands in for the zones'
//! authoritative servers. challtestsrv never truncates an answer, so the fallback to TCP
//! is shown against a small server that always does.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use acme_bridge::dns_check::{
    DnsCheck, DnsCheckError, Expectation, Gap, Resolvers, wait_until_visible,
};
use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, NS, SOA, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tracing::instrument::WithSubscriber;

use crate::harness::Pebble;

fn expect(name: &str, values: &[&str]) -> Expectation {
    Expectation {
        name: name.to_owned(),
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    }
}

fn servers(pebble: &Pebble) -> DnsCheck {
    DnsCheck::Servers(vec![pebble.dns_addr()])
}

/// A tracing subscriber that writes into a buffer the test can read.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + use<> {
        let logs = self.clone();
        tracing_subscriber::fmt()
            .with_env_filter("acme_bridge=debug")
            .with_ansi(false)
            .with_writer(move || logs.clone())
            .finish()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

impl io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn published_values_are_seen_at_once() {
    let pebble = Pebble::start().await;
    let name = "_acme-challenge.seen.test.";
    pebble.set_txt(name, "value-1").await;

    let report = wait_until_visible(
        &servers(&pebble),
        &[expect(name, &["value-1"])],
        Duration::from_secs(10),
        &Resolvers::default(),
    )
    .await
    .expect("the published value is visible");

    assert_eq!(report.names.len(), 1);
    let seen = &report.names[0];
    assert_eq!(seen.name, name);
    assert!(seen.cname_chain.is_empty());
    assert_eq!(seen.checked_name, name);
    assert_eq!(seen.servers, [pebble.dns_addr().to_string()]);
    assert_eq!(
        pebble.txt_queries_for("_acme-challenge.seen.test").await,
        1,
        "one round was enough"
    );
}

#[tokio::test]
async fn a_value_published_later_is_found_by_polling() {
    let pebble = Pebble::start().await;
    let name = "_acme-challenge.later.test.";
    let logs = Logs::default();

    let check = servers(&pebble);
    let expected = [expect(name, &["late-value"])];
    let resolvers = Resolvers::default();
    let started = Instant::now();
    let (result, ()) = tokio::join!(
        wait_until_visible(&check, &expected, Duration::from_secs(30), &resolvers)
            .with_subscriber(logs.subscriber()),
        async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            pebble.set_txt(name, "late-value").await;
        }
    );

    let report = result.expect("the value shows up while polling");
    assert!(report.elapsed >= Duration::from_millis(1500), "{report:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "{report:?}");
    let queries = pebble.txt_queries_for("_acme-challenge.later.test").await;
    assert!(
        queries >= 2,
        "it asked again after the first miss ({queries} queries)"
    );
    let logs = logs.text();
    assert!(
        logs.contains("DNS not propagated yet")
            && logs.contains(&format!(
                "{name} at {} still lacks TXT value \"late-value\" (it has: [])",
                pebble.dns_addr()
            )),
        "each incomplete round is logged with what is missing where:\n{logs}"
    );
}

#[tokio::test]
async fn a_missing_value_times_out_naming_it() {
    let pebble = Pebble::start().await;
    let name = "_acme-challenge.missing.test.";
    pebble.set_txt(name, "old").await;

    let started = Instant::now();
    let error = wait_until_visible(
        &servers(&pebble),
        &[expect(name, &["new-value"])],
        Duration::from_secs(2),
        &Resolvers::default(),
    )
    .await
    .expect_err("the value never appears");
    let took = started.elapsed();

    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "the timeout bounds the check: {took:?}"
    );
    let DnsCheckError::NotVisible { after, missing } = &error else {
        panic!("expected NotVisible, got {error:?}");
    };
    assert_eq!(*after, Duration::from_secs(2));
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert_eq!(missing[0].name, name);
    assert_eq!(missing[0].server, pebble.dns_addr().to_string());
    assert_eq!(
        missing[0].gap,
        Gap::Lacks {
            lacks: vec!["new-value".into()],
            has: vec!["old".into()],
        }
    );
    assert_eq!(
        error.to_string(),
        format!(
            "after 2s, {name} at {} still lacks TXT value \"new-value\" (it has: [\"old\"])",
            pebble.dns_addr()
        )
    );
    assert!(
        pebble.txt_queries_for("_acme-challenge.missing.test").await >= 2,
        "it polled before giving up"
    );
}

#[tokio::test]
async fn a_wildcard_and_its_apex_need_both_values_under_one_name() {
    let pebble = Pebble::start().await;
    let name = "_acme-challenge.both.test.";
    // The wildcard's and the apex's challenges, as two expectations for one name.
    let expected = [
        expect(name, &["apex-value"]),
        expect(name, &["wildcard-value"]),
    ];
    pebble.set_txt(name, "apex-value").await;

    let error = wait_until_visible(
        &servers(&pebble),
        &expected,
        Duration::from_secs(2),
        &Resolvers::default(),
    )
    .await
    .expect_err("one of the two values is not there");
    let DnsCheckError::NotVisible { missing, .. } = &error else {
        panic!("expected NotVisible, got {error:?}");
    };
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert_eq!(
        missing[0].gap,
        Gap::Lacks {
            lacks: vec!["wildcard-value".into()],
            has: vec!["apex-value".into()],
        },
        "only the absent value is named: {error}"
    );

    pebble.set_txt(name, "wildcard-value").await;
    let report = wait_until_visible(
        &servers(&pebble),
        &expected,
        Duration::from_secs(10),
        &Resolvers::default(),
    )
    .await
    .expect("both values are there");
    assert_eq!(report.names.len(), 1, "one name, checked once: {report:?}");
    assert_eq!(report.names[0].name, name);
}

#[tokio::test]
async fn a_cname_is_followed_and_reported() {
    let pebble = Pebble::start().await;
    let name = "_acme-challenge.aliased.test.";
    let target = "_acme-challenge.delegated.test.";
    pebble.set_cname(name, target).await;
    pebble.set_txt(target, "delegated-value").await;
    let logs = Logs::default();

    let report = wait_until_visible(
        &servers(&pebble),
        &[expect(name, &["delegated-value"])],
        Duration::from_secs(10),
        &Resolvers::default(),
    )
    .with_subscriber(logs.subscriber())
    .await
    .expect("the value is visible at the CNAME's target");

    let seen = &report.names[0];
    assert_eq!(seen.name, name);
    assert_eq!(seen.cname_chain, [target]);
    assert_eq!(seen.checked_name, target);
    let logs = logs.text();
    assert!(
        logs.contains(&format!("{name} is a CNAME to {target}; checking there")),
        "the CNAME is logged:\n{logs}"
    );
    assert!(
        pebble
            .txt_queries_for("_acme-challenge.delegated.test")
            .await
            >= 1,
        "the target itself was asked"
    );

    // A value missing at the target is reported at the target.
    let error = wait_until_visible(
        &servers(&pebble),
        &[expect(name, &["other-value"])],
        Duration::from_secs(2),
        &Resolvers::default(),
    )
    .await
    .expect_err("not at the target");
    let DnsCheckError::NotVisible { missing, .. } = &error else {
        panic!("expected NotVisible, got {error:?}");
    };
    assert_eq!(missing[0].name, target, "{error}");
}

#[tokio::test]
async fn a_cname_loop_is_an_error_not_a_hang() {
    let pebble = Pebble::start().await;
    let first = "_acme-challenge.loop.test.";
    let second = "_acme-challenge.loop-back.test.";
    pebble.set_cname(first, second).await;
    pebble.set_cname(second, first).await;

    let started = Instant::now();
    let error = wait_until_visible(
        &servers(&pebble),
        &[expect(first, &["value"])],
        Duration::from_secs(30),
        &Resolvers::default(),
    )
    .await
    .expect_err("a loop never resolves");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it failed fast"
    );
    assert_eq!(
        error,
        DnsCheckError::CnameLoop {
            name: first.into(),
            chain: vec![first.into(), second.into(), first.into()],
        }
    );
}

#[tokio::test]
async fn authoritative_mode_reports_a_resolver_that_cannot_answer_soa() {
    let pebble = Pebble::start().await;
    let name = "_acme-challenge.authoritative.test.";
    pebble.set_txt(name, "value").await;
    let resolvers = Resolvers {
        recursive: Some(vec![pebble.dns_addr()]),
        authoritative_port: pebble.dns_addr().port(),
    };

    let started = Instant::now();
    let error = wait_until_visible(
        &DnsCheck::Authoritative,
        &[expect(name, &["value"])],
        Duration::from_secs(60),
        &resolvers,
    )
    .await
    .expect_err("challtestsrv answers SOA with NOTIMP");
    eprintln!("{error}");

    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a clear error, not a wait for the timeout: {:?}",
        started.elapsed()
    );
    let DnsCheckError::ZoneNotFound {
        name: failed,
        reason,
    } = &error
    else {
        panic!("expected ZoneNotFound, got {error:?}");
    };
    assert_eq!(failed, name);
    assert!(
        reason.contains(&pebble.dns_addr().to_string()) && reason.contains("NOTIMP"),
        "the reason names the resolver and its answer: {reason}"
    );
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot find the DNS zone of {name}: ")),
        "{error}"
    );
    assert_eq!(
        pebble
            .txt_queries_for("_acme-challenge.authoritative.test")
            .await,
        0,
        "no TXT question before the zone is known"
    );
}

#[tokio::test]
async fn authoritative_mode_asks_the_name_servers_of_each_zone() {
    let pebble = Pebble::start().await;
    // challtestsrv plays every zone's name server; the in-test resolver knows the zones.
    let resolver = ZoneResolver::start(&["origin.test.", "delegated.test."]).await;
    let name = "_acme-challenge.www.origin.test.";
    let target = "_acme-challenge.delegated.test.";
    pebble.set_cname(name, target).await;
    pebble.set_txt(target, "apex").await;
    let resolvers = Resolvers {
        recursive: Some(vec![resolver.addr]),
        authoritative_port: pebble.dns_addr().port(),
    };
    let logs = Logs::default();

    let expected = [expect(name, &["apex", "wildcard"])];
    let (result, ()) = tokio::join!(
        wait_until_visible(
            &DnsCheck::Authoritative,
            &expected,
            Duration::from_secs(30),
            &resolvers,
        )
        .with_subscriber(logs.subscriber()),
        async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            pebble.set_txt(target, "wildcard").await;
        }
    );
    let report = result.unwrap_or_else(|e| panic!("{e}\n{}", logs.text()));
    eprintln!("{}", logs.text());

    let seen = &report.names[0];
    assert_eq!(seen.cname_chain, [target]);
    assert_eq!(seen.checked_name, target);
    let port = pebble.dns_addr().port();
    assert_eq!(
        seen.servers,
        [format!("ns1.delegated.test. (127.0.0.1:{port})")],
        "the target's zone's own name server was asked"
    );
    let logs = logs.text();
    for line in [
        format!("{name} is in zone origin.test."),
        "zone origin.test. has the name servers ns1.origin.test.".to_owned(),
        format!("{target} is in zone delegated.test."),
        format!("{name} is a CNAME to {target}; checking there"),
    ] {
        assert!(logs.contains(&line), "missing {line:?} in:\n{logs}");
    }
    let questions = resolver.questions();
    assert!(
        questions.contains(&("www.origin.test.".to_owned(), RecordType::SOA))
            && questions.contains(&("origin.test.".to_owned(), RecordType::SOA))
            && questions.contains(&("origin.test.".to_owned(), RecordType::NS))
            && questions.contains(&("ns1.origin.test.".to_owned(), RecordType::A)),
        "the resolver was asked to walk up to the zone: {questions:?}"
    );
    assert!(
        !questions.iter().any(|(_, t)| *t == RecordType::TXT),
        "TXT questions go to the name servers, not the resolver: {questions:?}"
    );
    assert!(
        pebble
            .txt_queries_for("_acme-challenge.delegated.test")
            .await
            >= 2,
        "the name server was polled"
    );
}

#[tokio::test]
async fn a_truncated_udp_answer_is_asked_again_over_tcp() {
    // challtestsrv never truncates (it sends 4 KiB datagrams), so a small server that
    // always does stands in: TC over UDP, the TXT record over TCP.
    let server = TruncatingServer::start("over-tcp").await;
    let name = "_acme-challenge.truncated.test.";

    let report = wait_until_visible(
        &DnsCheck::Servers(vec![server.addr]),
        &[expect(name, &["over-tcp"])],
        Duration::from_secs(10),
        &Resolvers::default(),
    )
    .await
    .expect("the value is read over TCP");

    assert_eq!(report.names[0].servers, [server.addr.to_string()]);
    assert_eq!(server.udp_queries.load(Ordering::SeqCst), 1);
    assert_eq!(server.tcp_queries.load(Ordering::SeqCst), 1);
}

/// Answers every UDP question with an empty, truncated (TC) response and every TCP
/// question with one TXT record.
struct TruncatingServer {
    addr: SocketAddr,
    udp_queries: Arc<AtomicUsize>,
    tcp_queries: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl TruncatingServer {
    async fn start(value: &str) -> Self {
        // The same port for UDP and TCP.
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP");
            let port = udp.local_addr().expect("local address").port();
            if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().expect("local address");
        let udp_queries = Arc::new(AtomicUsize::new(0));
        let tcp_queries = Arc::new(AtomicUsize::new(0));

        let counter = udp_queries.clone();
        let udp_task = tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            while let Ok((len, peer)) = udp.recv_from(&mut buffer).await {
                let Ok(request) = Message::from_vec(&buffer[..len]) else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let mut response = Message::response(request.metadata.id, request.metadata.op_code);
                response.add_queries(request.queries.clone());
                response.metadata.truncation = true;
                let bytes = response.to_vec().expect("encode answer");
                let _ = udp.send_to(&bytes, peer).await;
            }
        });

        let counter = tcp_queries.clone();
        let value = value.to_owned();
        let tcp_task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                let mut len = [0u8; 2];
                if stream.read_exact(&mut len).await.is_err() {
                    continue;
                }
                let mut bytes = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if stream.read_exact(&mut bytes).await.is_err() {
                    continue;
                }
                let Ok(request) = Message::from_vec(&bytes) else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let mut response = Message::response(request.metadata.id, request.metadata.op_code);
                response.add_queries(request.queries.clone());
                if let Some(query) = request.queries.first() {
                    response.add_answer(Record::from_rdata(
                        query.name().clone(),
                        0,
                        RData::TXT(TXT::new(vec![value.clone()])),
                    ));
                }
                let bytes = response.to_vec().expect("encode answer");
                let len = u16::try_from(bytes.len()).expect("short answer");
                let _ = stream.write_all(&len.to_be_bytes()).await;
                let _ = stream.write_all(&bytes).await;
            }
        });

        Self {
            addr,
            udp_queries,
            tcp_queries,
            tasks: vec![udp_task, tcp_task],
        }
    }
}

impl Drop for TruncatingServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A recursive resolver stand-in that knows a few zones, each with one name server
/// `ns1.<zone>` at 127.0.0.1: it answers SOA and NS at the apex, the name server's A
/// record, NODATA (with the SOA) for other names in the zone, NXDOMAIN elsewhere.
struct ZoneResolver {
    addr: SocketAddr,
    questions: Arc<Mutex<Vec<(String, RecordType)>>>,
    task: JoinHandle<()>,
}

impl ZoneResolver {
    async fn start(zones: &[&str]) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP");
        let addr = socket.local_addr().expect("local address");
        let zones: Vec<Name> = zones
            .iter()
            .map(|z| Name::from_ascii(z).expect("zone name"))
            .collect();
        let questions = Arc::new(Mutex::new(Vec::new()));
        let seen = questions.clone();
        let task = tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            loop {
                let Ok((len, peer)) = socket.recv_from(&mut buffer).await else {
                    return;
                };
                let Ok(request) = Message::from_vec(&buffer[..len]) else {
                    continue;
                };
                if let Some(query) = request.queries.first() {
                    seen.lock()
                        .expect("questions")
                        .push((query.name().to_ascii(), query.query_type()));
                }
                let answer = answer(&zones, &request);
                let bytes = answer.to_vec().expect("encode answer");
                let _ = socket.send_to(&bytes, peer).await;
            }
        });
        Self {
            addr,
            questions,
            task,
        }
    }

    fn questions(&self) -> Vec<(String, RecordType)> {
        self.questions.lock().expect("questions").clone()
    }
}

impl Drop for ZoneResolver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(zones: &[Name], request: &Message) -> Message {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_queries(request.queries.clone());
    let Some(query) = request.queries.first() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return response;
    };
    let name = query.name();
    let Some(zone) = zones.iter().find(|zone| zone.zone_of(name)) else {
        response.metadata.response_code = ResponseCode::NXDomain;
        return response;
    };
    let ns = Name::from_ascii("ns1")
        .expect("label")
        .append_domain(zone)
        .expect("name server name");
    let soa = Record::from_rdata(
        zone.clone(),
        60,
        RData::SOA(SOA::new(
            ns.clone(),
            Name::from_ascii("hostmaster")
                .expect("label")
                .append_domain(zone)
                .expect("rname"),
            1,
            3600,
            600,
            86400,
            60,
        )),
    );
    match query.query_type() {
        RecordType::SOA if name == zone => {
            response.add_answer(soa);
        }
        RecordType::NS if name == zone => {
            response.add_answer(Record::from_rdata(
                zone.clone(),
                60,
                RData::NS(NS(ns.clone())),
            ));
        }
        RecordType::A if *name == ns => {
            response.add_answer(Record::from_rdata(
                ns.clone(),
                60,
                RData::A(A(Ipv4Addr::LOCALHOST)),
            ));
        }
        _ => {
            response.add_authority(soa);
        }
    }
    response
}
