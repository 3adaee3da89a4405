//! Tests only: a `kube::Client` whose "apiserver" is a function of the request's path and JSON
//! body, counting the requests it answers — for the TokenReview and SubjectAccessReview paths
//! where kwk's own apiserver gives only one answer (it authorizes everything).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::BodyExt as _;
use serde_json::Value;

/// A client whose requests `answer(path, body)` answers (200 with the returned JSON), and the
/// number of requests made so far.
pub(super) fn scripted_client(
    answer: impl Fn(&str, &Value) -> Value + Send + Sync + 'static,
) -> (kube::Client, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let answer = Arc::new(answer);
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let answer = answer.clone();
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let path = request.uri().path().to_string();
            let bytes = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let reply = serde_json::to_vec(&answer(&path, &body)).unwrap_or_default();
            Ok::<_, Infallible>(http::Response::new(kube::client::Body::from(reply)))
        }
    });
    (kube::Client::new(service, "default"), calls)
}
