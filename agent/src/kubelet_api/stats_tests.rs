//! Tests of the `/stats/summary` document and its samples.

use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

#[test]
fn proc_files_are_read() {
    let stat = "cpu  100 5 50 1000 7 1 2 3 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
    assert_eq!(parse_proc_stat_cpu(stat), Some(161 * NANOS_PER_TICK));
    assert_eq!(parse_proc_stat_cpu("intr 1\n"), None);
}

#[test]
fn boot_time_is_read() {
    assert_eq!(
        parse_boot_time(
            "cpu  1 2
btime 1700000000
"
        ),
        Some(1_700_000_000)
    );
    assert_eq!(
        parse_boot_time(
            "cpu  1 2
"
        ),
        None
    );
}

/// A pod in `default` with a name and UID (also for `resource_metrics`' tests).
pub(crate) fn pod(name: &str, uid: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
            ..ObjectMeta::default()
        },
        ..Pod::default()
    }
}

fn sample(uid: &str, name: &str, attempt: u32, cpu: u64, mem: u64) -> ContainerSample {
    ContainerSample {
        pod_uid: uid.into(),
        name: name.into(),
        attempt,
        time_nanos: 1_000_000_000,
        cpu_usage_core_nanos: Some(cpu),
        cpu_usage_nano_cores: Some(cpu / 10),
        memory_working_set_bytes: Some(mem),
        ..ContainerSample::default()
    }
}

#[test]
fn summary_has_node_and_pods_with_their_latest_containers() {
    let node = NodeSample {
        time_nanos: 2_000_000_000,
        cpu_usage_core_nanos: 7,
        cpu_usage_nano_cores: Some(3),
        memory: Some(NodeMemory {
            capacity: 1000,
            usage: 800,
            working_set: 700,
        }),
        ..NodeSample::default()
    };
    let pods = [pod("a", "u-a"), pod("b", "u-b")];
    let samples = [
        sample("u-a", "app", 0, 100, 10),
        sample("u-a", "app", 1, 200, 20),
        sample("u-a", "side", 0, 50, 5),
        sample("u-other", "x", 0, 1, 1),
    ];
    let doc = summary("node-1", &node, &pods, &samples, &BTreeMap::new());
    assert_eq!(doc["node"]["nodeName"], "node-1");
    assert_eq!(doc["node"]["cpu"]["usageNanoCores"], 3);
    assert_eq!(doc["node"]["cpu"]["usageCoreNanoSeconds"], 7);
    assert_eq!(doc["node"]["memory"]["workingSetBytes"], 700);
    assert_eq!(doc["node"]["memory"]["usageBytes"], 800);
    assert_eq!(
        doc["node"]["memory"]["availableBytes"], 300,
        "capacity − working set"
    );
    assert_eq!(doc["pods"].as_array().unwrap().len(), 2);
    let a = &doc["pods"][0];
    assert_eq!(a["podRef"]["name"], "a");
    let names: Vec<_> = a["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(names, ["app", "side"]);
    assert_eq!(
        a["containers"][0]["cpu"]["usageCoreNanoSeconds"], 200,
        "the latest attempt"
    );
    assert_eq!(a["cpu"]["usageCoreNanoSeconds"], 250);
    assert_eq!(a["cpu"]["usageNanoCores"], 25);
    assert_eq!(a["memory"]["workingSetBytes"], 25);
    assert_eq!(doc["pods"][1]["containers"], json!([]));
    assert!(doc["pods"][1]["cpu"].get("usageNanoCores").is_none());
}

/// A pod cgroup sample: 2 s of CPU at 1.5 cores, 900 of 1000 bytes used, 100 inactive.
fn cgroup() -> CgroupSample {
    CgroupSample {
        time_nanos: 3_000_000_000,
        cpu_usage_core_nanos: Some(2_000_000_000),
        cpu_usage_nano_cores: Some(1_500_000_000),
        memory_usage_bytes: Some(900),
        memory_working_set_bytes: Some(800),
        memory_rss_bytes: Some(600),
        page_faults: Some(40),
        major_page_faults: Some(2),
        memory_limit_bytes: Some(1000),
        process_count: Some(3),
    }
}

#[test]
fn pod_figures_come_from_the_pod_cgroup_when_there_is_one() {
    let node = NodeSample {
        time_nanos: 2_000_000_000,
        ..NodeSample::default()
    };
    let pods = [pod("a", "u-a"), pod("b", "u-b")];
    let samples = [
        sample("u-a", "app", 0, 100, 10),
        sample("u-b", "app", 0, 100, 10),
    ];
    let extras = BTreeMap::from([(
        "u-a".to_string(),
        PodExtras {
            cgroup: Some(cgroup()),
        },
    )]);
    let doc = summary("n", &node, &pods, &samples, &extras);
    // (pod, field, expected)
    let cases = [
        (0, "/cpu/usageCoreNanoSeconds", json!(2_000_000_000u64)),
        (0, "/cpu/usageNanoCores", json!(1_500_000_000u64)),
        (0, "/cpu/time", json!("1970-01-01T00:00:03Z")),
        (0, "/memory/workingSetBytes", json!(800)),
        (0, "/memory/usageBytes", json!(900)),
        (0, "/memory/availableBytes", json!(200)),
        (0, "/memory/rssBytes", json!(600)),
        (0, "/memory/pageFaults", json!(40)),
        (0, "/memory/majorPageFaults", json!(2)),
        (0, "/process_stats/process_count", json!(3)),
        (1, "/process_stats", Value::Null),
        (0, "/containers/0/cpu/usageCoreNanoSeconds", json!(100)),
        (1, "/cpu/usageCoreNanoSeconds", json!(100)),
        (1, "/memory/workingSetBytes", json!(10)),
        (1, "/memory/availableBytes", Value::Null),
    ];
    for (index, pointer, expected) in cases {
        let got = doc["pods"][index]
            .pointer(pointer)
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(got, expected, "pod {index} {pointer}");
    }
}

#[test]
fn containers_carry_start_time_faults_and_available_memory() {
    let mut samples = vec![ContainerSample {
        pod_uid: "u-a".into(),
        name: "app".into(),
        attempt: 1,
        time_nanos: 1_000_000_000,
        memory_available_bytes: Some(5),
        page_faults: Some(7),
        major_page_faults: Some(1),
        ..ContainerSample::default()
    }];
    let container = |attempt, created_at| api::Container {
        metadata: Some(api::ContainerMetadata {
            name: "app".into(),
            attempt,
        }),
        labels: [(labels::POD_UID.to_string(), "u-a".to_string())].into(),
        created_at,
        ..api::Container::default()
    };
    add_start_times(
        &mut samples,
        &[container(0, 1), container(1, 2_500_000_000)],
    );
    assert_eq!(samples[0].start_time_nanos, Some(2_500_000_000));
    let node = NodeSample {
        boot_time_secs: Some(10),
        rlimit: Some((4_194_304, 321)),
        system_containers: vec![
            ("kubelet".to_string(), CgroupSample::default()),
            ("pods".to_string(), cgroup()),
        ],
        ..NodeSample::default()
    };
    let doc = summary("n", &node, &[pod("a", "u-a")], &samples, &BTreeMap::new());
    let c = &doc["pods"][0]["containers"][0];
    assert_eq!(c["startTime"], "1970-01-01T00:00:02.5Z");
    assert_eq!(c["memory"]["availableBytes"], 5);
    assert_eq!(c["memory"]["pageFaults"], 7);
    assert_eq!(c["memory"]["majorPageFaults"], 1);
    assert!(c["memory"].get("usageBytes").is_none(), "unknown: left out");
    let n = &doc["node"];
    assert_eq!(n["startTime"], "1970-01-01T00:00:10Z");
    assert_eq!(n["rlimit"]["maxpid"], 4_194_304);
    assert_eq!(n["rlimit"]["curproc"], 321);
    assert_eq!(n["systemContainers"][0]["name"], "kubelet");
    assert_eq!(n["systemContainers"][1]["name"], "pods");
    assert_eq!(n["systemContainers"][1]["memory"]["workingSetBytes"], 800);
}
