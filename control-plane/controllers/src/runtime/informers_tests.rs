use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::channel::mpsc;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

fn config_map(name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            ..ObjectMeta::default()
        },
        data: Some([("v".to_string(), value.to_string())].into()),
        ..ConfigMap::default()
    }
}

/// A client that is never called (the watches here are not polled).
fn offline_client() -> kube::Client {
    let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
    kube::Client::try_from(config).expect("client")
}

/// What one subscriber saw: "name=value" per event.
type Seen = Arc<Mutex<Vec<String>>>;

fn recorder(seen: &Seen) -> impl Fn(&ConfigMap) + Send + Sync + 'static {
    let seen = seen.clone();
    move |cm: &ConfigMap| {
        let value = cm
            .data
            .as_ref()
            .and_then(|d| d.get("v").cloned())
            .unwrap_or_default();
        lock(&seen).push(format!(
            "{}={value}",
            cm.metadata.name.clone().unwrap_or_default()
        ));
    }
}

async fn wait_for(seen: &Seen, count: usize) -> Vec<String> {
    for _ in 0..200 {
        let now = lock(seen).clone();
        if now.len() >= count {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    lock(seen).clone()
}

#[tokio::test]
async fn subscribers_of_one_kind_and_config_share_one_watch_and_see_every_event() {
    let informers = Informers::new();
    let key = WatchKey::of::<ConfigMap>(None, &watcher::Config::default());
    let (events, source) = mpsc::unbounded::<watcher::Result<watcher::Event<ConfigMap>>>();
    let opened = Arc::new(AtomicUsize::new(0));
    let mut source = Some(source);
    let mut open = || {
        opened.fetch_add(1, Ordering::SeqCst);
        source.take().expect("opened once").boxed()
    };
    let (first_seen, second_seen): (Seen, Seen) = (Seen::default(), Seen::default());
    let first = informers.subscribe_to(key.clone(), &mut open, recorder(&first_seen));
    let second = informers.subscribe_to(key, &mut open, recorder(&second_seen));
    assert_eq!(opened.load(Ordering::SeqCst), 1, "one underlying watch");
    assert_eq!(informers.watch_count(), 1);

    // Each subscriber's controller polls its clone of the driver.
    let drivers = [
        tokio::spawn(first.driver.clone()),
        tokio::spawn(second.driver.clone()),
    ];
    for event in [
        watcher::Event::Init,
        watcher::Event::InitApply(config_map("a", "1")),
        watcher::Event::InitDone,
        watcher::Event::Apply(config_map("b", "1")),
        watcher::Event::Apply(config_map("a", "2")),
        watcher::Event::Delete(config_map("b", "1")),
    ] {
        events.unbounded_send(Ok(event)).expect("driver listening");
    }
    let want = ["a=1", "b=1", "a=2", "b=1"];
    assert_eq!(wait_for(&first_seen, 4).await, want);
    assert_eq!(wait_for(&second_seen, 4).await, want);

    // Both read the one store, which shows the watch's current state.
    first.store.wait_until_ready().await.expect("listed");
    let names = |store: &Store<ConfigMap>| {
        let mut all: Vec<String> = store
            .state()
            .iter()
            .map(|cm| {
                format!(
                    "{}={}",
                    cm.metadata.name.clone().unwrap_or_default(),
                    cm.data
                        .as_ref()
                        .and_then(|d| d.get("v").cloned())
                        .unwrap_or_default()
                )
            })
            .collect();
        all.sort();
        all
    };
    assert_eq!(names(&first.store), ["a=2"]);
    assert_eq!(names(&second.store), ["a=2"]);

    // One subscriber stopping (its task dropped) does not stop the watch for the other.
    drivers[0].abort();
    events
        .unbounded_send(Ok(watcher::Event::Apply(config_map("c", "1"))))
        .expect("driver listening");
    assert_eq!(
        wait_for(&second_seen, 5).await.last().map(String::as_str),
        Some("c=1")
    );
    drivers[1].abort();
}

#[tokio::test]
async fn different_kinds_scopes_or_selectors_get_separate_watches() {
    let informers = Informers::new();
    let client = offline_client();
    let all_pods = || Api::<Pod>::all(client.clone());
    let ignore = |_: &Pod| {};
    let plain = watcher::Config::default();
    informers.subscribe(all_pods(), plain.clone(), ignore);
    informers.subscribe(all_pods(), plain.clone(), ignore);
    assert_eq!(informers.watch_count(), 1, "same kind, scope and config");

    informers.subscribe(all_pods(), plain.clone().labels("app=web"), ignore);
    informers.subscribe(all_pods(), plain.clone().labels("app=web"), ignore);
    assert_eq!(
        informers.watch_count(),
        2,
        "a label selector is its own watch"
    );
    informers.subscribe(all_pods(), plain.clone().fields("spec.nodeName=n1"), ignore);
    assert_eq!(
        informers.watch_count(),
        3,
        "a field selector is its own watch"
    );
    informers.subscribe(
        Api::<Pod>::namespaced(client.clone(), "team"),
        plain.clone(),
        ignore,
    );
    assert_eq!(
        informers.watch_count(),
        4,
        "a namespace scope is its own watch"
    );
    informers.subscribe(Api::<ConfigMap>::all(client.clone()), plain, |_| {});
    assert_eq!(informers.watch_count(), 5, "another kind is its own watch");
    assert_eq!(
        informers.describe(),
        [
            "v1/ConfigMap cluster-wide",
            "v1/Pod cluster-wide",
            "v1/Pod cluster-wide (fields spec.nodeName=n1)",
            "v1/Pod cluster-wide (labels app=web)",
            "v1/Pod in namespace team",
        ]
    );
}

#[tokio::test]
async fn watches_join_the_registry_of_the_scope_they_are_built_in() {
    let client = offline_client();
    let build = || {
        let mut watches = super::super::Watches::new(client.clone());
        watches.watch(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default(),
            |_| Vec::new(),
        );
        watches
    };
    let shared = Informers::new();
    let _a = shared.scope(build);
    let _b = shared.scope(build);
    assert_eq!(shared.watch_count(), 1, "two controllers, one pod watch");
    assert!(
        Informers::current().is_none(),
        "the scope ends with the factory"
    );

    let _private = build();
    assert_eq!(
        shared.watch_count(),
        1,
        "outside a scope: a private registry"
    );
}
