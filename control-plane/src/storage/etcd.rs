//! The etcd backend: the [`Store`] contract mapped onto etcd's v3 API, the way kube-apiserver's
//! etcd3 storage does it.
//!
//! - create = txn `create_revision(key) == 0` → put; update = txn `mod_revision(key) ==
//!   expected` → put (else get, to tell `NotFound` from `Conflict`); delete likewise;
//! - list = `range [start, prefix_end)` with `limit` and `revision`; count = `count_only`;
//! - watch = `start_revision = after + 1` with `prev_kv` (a delete event needs the last value);
//! - etcd's "required revision has been compacted" → [`StoreError::Compacted`].
//!
//! Keys are stored as given (`/registry/...`, like upstream), behind an optional extra
//! `key_prefix` so several clusters or tests can share one etcd.

use std::collections::VecDeque;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions,
    Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use futures::StreamExt as _;

use super::{
    EventKind, KeyValue, ListOptions, ListResult, Revision, Store, StoreError, WatchEvent,
    WatchStream,
};

/// The largest response accepted from etcd (gRPC's own maximum, like kube-apiserver's).
const MAX_MESSAGE: usize = i32::MAX as usize;

/// TLS to etcd (PEM bytes). Endpoints then use `https://`.
#[derive(Clone, Default)]
pub struct EtcdTls {
    /// CA bundle that signed etcd's serving certificate.
    pub ca_pem: Vec<u8>,
    /// Client certificate and key, when etcd asks for one (`--client-cert-auth`).
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
    /// The name to check etcd's certificate against, if not the endpoint's host.
    pub server_name: Option<String>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca_pem_len", &self.ca_pem.len())
            .field("client_cert", &self.client_cert_pem.is_some())
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Why connecting to etcd failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to etcd at {endpoints}")]
    Connect {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd at {endpoints} does not answer")]
    Probe {
        endpoints: String,
        #[source]
        source: StoreError,
    },
    #[error("a client certificate needs both the certificate and the key")]
    HalfIdentity,
}

/// The etcd [`Store`].
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` (`host:port`, `http://…` or `https://…`) and checks it
    /// answers. Every key is stored under `key_prefix` (usually empty: keys already start
    /// with `/registry/`).
    pub async fn connect(
        endpoints: &[String],
        tls: Option<EtcdTls>,
        key_prefix: &str,
    ) -> Result<Self, ConnectError> {
        let joined = endpoints.join(",");
        let mut options = ConnectOptions::new()
            .with_connect_timeout(std::time::Duration::from_secs(5))
            .with_keep_alive(
                std::time::Duration::from_secs(30),
                std::time::Duration::from_secs(10),
            );
        let mut endpoints = endpoints.to_vec();
        if let Some(tls) = tls {
            let mut config = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(tls.ca_pem));
            match (tls.client_cert_pem, tls.client_key_pem) {
                (Some(cert), Some(key)) => {
                    config = config.identity(etcd_client::Identity::from_pem(cert, key));
                }
                (None, None) => {}
                _ => return Err(ConnectError::HalfIdentity),
            }
            if let Some(name) = tls.server_name {
                config = config.domain_name(name);
            }
            options = options.with_tls(config);
            for e in &mut endpoints {
                if !e.contains("://") {
                    *e = format!("https://{e}");
                }
            }
        }
        let client = Client::connect(&endpoints, Some(options))
            .await
            .map_err(|source| ConnectError::Connect {
                endpoints: joined.clone(),
                source,
            })?;
        let store = EtcdStore {
            client,
            prefix: key_prefix.to_owned(),
        };
        store
            .current_revision()
            .await
            .map_err(|source| ConnectError::Probe {
                endpoints: joined,
                source,
            })?;
        Ok(store)
    }

    /// A KV client that accepts responses of any size (a LIST of many objects is one
    /// message; tonic's default cap is 4 MiB). kube-apiserver sets the same limit.
    fn kv_client(&self) -> etcd_client::KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE)
    }

    /// A single key to read when only the response header (revision) or the compaction
    /// check matters: cheap whatever the store holds (etcd refuses an empty key).
    fn probe_key(&self) -> Vec<u8> {
        self.full("/")
    }

    fn full(&self, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(self.prefix.as_bytes());
        k.extend_from_slice(key.as_bytes());
        k
    }

    fn kv(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
        let key = kv
            .key_str()
            .map_err(|e| StoreError::Backend(format!("etcd key is not UTF-8: {e}")))?;
        let key = key.strip_prefix(self.prefix.as_str()).ok_or_else(|| {
            StoreError::Backend(format!("etcd key {key} is outside prefix {}", self.prefix))
        })?;
        Ok(KeyValue {
            key: key.to_owned(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        })
    }

    /// Runs `when → then, else get(key)`; on failure returns the key's current state.
    async fn txn(
        &self,
        key: &[u8],
        when: Vec<Compare>,
        then: TxnOp,
    ) -> Result<Result<(Revision, TxnOpResponse), Option<KeyValue>>, StoreError> {
        let txn = Txn::new()
            .when(when)
            .and_then(vec![then])
            .or_else(vec![TxnOp::get(key.to_vec(), None)]);
        let resp = self
            .kv_client()
            .txn(txn)
            .await
            .map_err(|e| etcd_error("txn", &e))?;
        let revision = header_revision(resp.header())?;
        let op = resp
            .op_responses()
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Backend("etcd txn answered no operation".into()))?;
        if resp.succeeded() {
            return Ok(Ok((revision, op)));
        }
        match op {
            TxnOpResponse::Get(get) => {
                Ok(Err(get.kvs().first().map(|kv| self.kv(kv)).transpose()?))
            }
            _ => Err(StoreError::Backend(
                "etcd txn: unexpected else answer".into(),
            )),
        }
    }

    /// The compacted revision: etcd has no call for it, but a read below it fails, so it is
    /// found by bisection over `[1, current]` (a handful of cheap `count_only` reads).
    async fn find_compacted(&self) -> Result<Revision, StoreError> {
        let current = self.current_revision().await?;
        let (mut lo, mut hi) = (1, current);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.probe_at(mid).await? {
                true => hi = mid,
                false => lo = mid + 1,
            }
        }
        Ok(lo)
    }

    /// Whether a read at `revision` is possible (not compacted).
    async fn probe_at(&self, revision: Revision) -> Result<bool, StoreError> {
        let options = GetOptions::new().with_count_only().with_revision(revision);
        match self.kv_client().get(self.probe_key(), Some(options)).await {
            Ok(_) => Ok(true),
            Err(e) if is_compacted(&e) => Ok(false),
            Err(e) => Err(etcd_error("range", &e)),
        }
    }

    async fn compacted_error(&self, requested: Revision) -> StoreError {
        match self.find_compacted().await {
            Ok(compacted) => StoreError::Compacted {
                requested,
                compacted,
            },
            Err(e) => e,
        }
    }

    async fn future_error(&self, requested: Revision) -> StoreError {
        match self.current_revision().await {
            Ok(current) => StoreError::FutureRevision { requested, current },
            Err(e) => e,
        }
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let resp = self
            .kv_client()
            .get(self.full(key), None)
            .await
            .map_err(|e| etcd_error("get", &e))?;
        resp.kvs().first().map(|kv| self.kv(kv)).transpose()
    }

    async fn list(&self, options: &ListOptions) -> Result<ListResult, StoreError> {
        let prefix = self.full(&options.prefix);
        let start = match options.start_after.as_deref() {
            Some(after) if after >= options.prefix.as_str() => {
                let mut k = self.full(after);
                k.push(0);
                k
            }
            _ => prefix.clone(),
        };
        let mut get = GetOptions::new().with_range(prefix_end(&prefix));
        if let Some(revision) = options.revision {
            get = get.with_revision(revision);
        }
        match options.limit {
            Some(0) => get = get.with_count_only(),
            Some(limit) => get = get.with_limit(i64::try_from(limit).unwrap_or(i64::MAX)),
            None => {}
        }
        let resp = match self.kv_client().get(start, Some(get)).await {
            Ok(resp) => resp,
            Err(e) => {
                let requested = options.revision.unwrap_or(0);
                return Err(if is_compacted(&e) {
                    self.compacted_error(requested).await
                } else if is_future(&e) {
                    self.future_error(requested).await
                } else {
                    etcd_error("range", &e)
                });
            }
        };
        let revision = match options.revision {
            Some(r) => r,
            None => header_revision(resp.header())?,
        };
        let items = resp
            .kvs()
            .iter()
            .map(|kv| self.kv(kv))
            .collect::<Result<Vec<_>, _>>()?;
        let more = if options.limit == Some(0) {
            resp.count() > 0
        } else {
            resp.more()
        };
        Ok(ListResult {
            items,
            revision,
            more,
        })
    }

    async fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        let prefix = self.full(prefix);
        let get = GetOptions::new()
            .with_range(prefix_end(&prefix))
            .with_count_only();
        let resp = self
            .kv_client()
            .get(prefix, Some(get))
            .await
            .map_err(|e| etcd_error("count", &e))?;
        Ok(u64::try_from(resp.count()).unwrap_or(0))
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let full = self.full(key);
        let when = vec![Compare::create_revision(full.clone(), CompareOp::Equal, 0)];
        let then = TxnOp::put(full.clone(), value.clone(), None);
        match self.txn(&full, when, then).await? {
            Ok((revision, _)) => Ok(KeyValue {
                key: key.to_owned(),
                value,
                create_revision: revision,
                mod_revision: revision,
            }),
            Err(_) => Err(StoreError::AlreadyExists(key.to_owned())),
        }
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        let full = self.full(key);
        let when = vec![
            Compare::create_revision(full.clone(), CompareOp::Greater, 0),
            Compare::mod_revision(full.clone(), CompareOp::Equal, expected),
        ];
        let then = TxnOp::put(
            full.clone(),
            value.clone(),
            Some(PutOptions::new().with_prev_key()),
        );
        match self.txn(&full, when, then).await? {
            Ok((revision, TxnOpResponse::Put(put))) => {
                let create_revision = put.prev_key().map_or(revision, |p| p.create_revision());
                Ok(KeyValue {
                    key: key.to_owned(),
                    value,
                    create_revision,
                    mod_revision: revision,
                })
            }
            Ok(_) => Err(StoreError::Backend(
                "etcd txn: unexpected put answer".into(),
            )),
            Err(None) => Err(StoreError::NotFound(key.to_owned())),
            Err(Some(current)) => Err(StoreError::Conflict {
                key: key.to_owned(),
                expected,
                actual: current.mod_revision,
            }),
        }
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        let full = self.full(key);
        let mut when = vec![Compare::create_revision(
            full.clone(),
            CompareOp::Greater,
            0,
        )];
        if let Some(expected) = expected {
            when.push(Compare::mod_revision(
                full.clone(),
                CompareOp::Equal,
                expected,
            ));
        }
        let then = TxnOp::delete(full.clone(), Some(DeleteOptions::new().with_prev_key()));
        match self.txn(&full, when, then).await? {
            Ok((revision, TxnOpResponse::Delete(delete))) => {
                let prev = delete.prev_kvs().first().ok_or_else(|| {
                    StoreError::Backend("etcd delete answered no previous value".into())
                })?;
                let mut kv = self.kv(prev)?;
                kv.mod_revision = revision;
                Ok(kv)
            }
            Ok(_) => Err(StoreError::Backend(
                "etcd txn: unexpected delete answer".into(),
            )),
            Err(None) => Err(StoreError::NotFound(key.to_owned())),
            Err(Some(current)) => Err(StoreError::Conflict {
                key: key.to_owned(),
                expected: expected.unwrap_or(0),
                actual: current.mod_revision,
            }),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let current = self.current_revision().await?;
        if after > current {
            return Err(StoreError::FutureRevision {
                requested: after,
                current,
            });
        }
        // etcd reports a compacted start revision only after the watch was created; check
        // first so the caller gets `Compacted` here, like from the embedded store.
        if after < current && !self.probe_at(after + 1).await? {
            return Err(self.compacted_error(after).await);
        }
        let full = self.full(prefix);
        let options = WatchOptions::new()
            .with_range(prefix_end(&full))
            .with_start_revision(after + 1)
            .with_prev_key();
        let stream = self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE)
            .watch(full, Some(options))
            .await
            .map_err(|e| etcd_error("watch", &e))?;
        let state = WatchState {
            last: after,
            store: self.clone(),
            stream,
            pending: VecDeque::new(),
            done: false,
        };
        Ok(futures::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        })
        .boxed())
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let get = GetOptions::new().with_count_only();
        let resp = self
            .kv_client()
            .get(self.probe_key(), Some(get))
            .await
            .map_err(|e| etcd_error("range", &e))?;
        header_revision(resp.header())
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        self.find_compacted().await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        match self.kv_client().compact(revision, None).await {
            Ok(_) => Ok(()),
            // Already compacted at or past it: nothing to do, as in the embedded store.
            Err(e) if is_compacted(&e) => Ok(()),
            Err(e) if is_future(&e) => Err(self.future_error(revision).await),
            Err(e) => Err(etcd_error("compact", &e)),
        }
    }
}

/// A watch: etcd responses flattened into events.
struct WatchState {
    /// The revision of the last event delivered (or the watch's start).
    last: Revision,
    store: EtcdStore,
    stream: etcd_client::WatchStream,
    pending: VecDeque<Result<WatchEvent, StoreError>>,
    done: bool,
}

impl WatchState {
    async fn next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                match &item {
                    Ok(event) => self.last = event.kv.mod_revision,
                    Err(_) => {
                        self.done = true;
                        self.pending.clear();
                    }
                }
                return Some(item);
            }
            if self.done {
                return None;
            }
            let resp = match self.stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    self.done = true;
                    return Some(Err(StoreError::Backend("etcd closed the watch".into())));
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(etcd_error("watch", &e)));
                }
            };
            if resp.canceled() {
                self.done = true;
                let compacted = resp.compact_revision();
                return Some(Err(if compacted > 0 {
                    StoreError::Compacted {
                        requested: self.last,
                        compacted,
                    }
                } else {
                    StoreError::Backend(format!(
                        "etcd cancelled the watch: {}",
                        resp.cancel_reason()
                    ))
                }));
            }
            for event in resp.events() {
                self.pending.push_back(self.store.event(event));
            }
        }
    }
}

impl EtcdStore {
    fn event(&self, event: &etcd_client::Event) -> Result<WatchEvent, StoreError> {
        let kv = event
            .kv()
            .ok_or_else(|| StoreError::Backend("etcd watch event without a key".into()))?;
        let prev = event.prev_kv().map(|p| self.kv(p)).transpose()?;
        match event.event_type() {
            EventType::Put => Ok(WatchEvent {
                kind: EventKind::Put,
                kv: self.kv(kv)?,
                prev,
            }),
            EventType::Delete => {
                // Like kube-apiserver: a delete without its last value cannot be delivered.
                let prev = prev.ok_or_else(|| {
                    StoreError::Backend("etcd delete event without its previous value".into())
                })?;
                Ok(WatchEvent {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        mod_revision: kv.mod_revision(),
                        ..prev.clone()
                    },
                    prev: Some(prev),
                })
            }
        }
    }
}

/// The end of the key range of `prefix` (etcd's `range_end` for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Empty or all 0xff: every key.
    vec![0]
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision, StoreError> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| StoreError::Backend("etcd answered without a header".into()))
}

fn status_message(e: &etcd_client::Error) -> Option<&str> {
    match e {
        etcd_client::Error::GRpcStatus(status) => Some(status.message()),
        _ => None,
    }
}

fn is_compacted(e: &etcd_client::Error) -> bool {
    status_message(e).is_some_and(|m| m.contains("required revision has been compacted"))
}

fn is_future(e: &etcd_client::Error) -> bool {
    status_message(e).is_some_and(|m| m.contains("required revision is a future revision"))
}

fn etcd_error(op: &'static str, e: &etcd_client::Error) -> StoreError {
    StoreError::Backend(format!("etcd {op}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_increments_the_last_byte_that_can_be() {
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b""), b"\0");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }
}
