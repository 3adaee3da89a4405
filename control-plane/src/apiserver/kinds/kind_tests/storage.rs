//! PersistentVolumes, PersistentVolumeClaims, StorageClasses, CSI tables.

use serde_json::json;

use super::*;

#[test]
fn persistent_volumes() {
    let pv = defaulted(
        "",
        "PersistentVolume",
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-1", "creationTimestamp": ago(3600)},
               "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                        "hostPath": {"path": "/srv/pv-1"}, "storageClassName": "local",
                        "claimRef": {"namespace": "default", "name": "data"}}}),
    );
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pv["status"]["phase"], "Pending");
    assert_eq!(
        causes("", "PersistentVolume", pv.clone(), None),
        Vec::<String>::new()
    );
    assert_eq!(
        row("", "PersistentVolume", &pv),
        [
            json!("pv-1"),
            json!("10Gi"),
            json!("RWO,RWX"),
            json!("Retain"),
            json!("Pending"),
            json!("default/data"),
            json!("local"),
            json!("<unset>"),
            json!(""),
            json!("60m"),
            json!("Filesystem")
        ]
    );
    let mut sourceless = pv.clone();
    sourceless["spec"]
        .as_object_mut()
        .unwrap()
        .remove("hostPath");
    assert_cause(
        &causes("", "PersistentVolume", sourceless, None),
        "spec: Required value: must specify a volume type",
    );
    let mut moved = pv.clone();
    moved["spec"]["hostPath"]["path"] = json!("/srv/other");
    assert_cause(
        &causes("", "PersistentVolume", moved, Some(pv)),
        "spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is immutable after creation",
    );
}

#[test]
fn claims() {
    let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta("data", 120),
                     "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    let d = defaulted("", "PersistentVolumeClaim", pvc.clone());
    assert_eq!(d["spec"]["volumeMode"], "Filesystem");
    assert_eq!(d["status"]["phase"], "Pending");
    assert_eq!(
        row("", "PersistentVolumeClaim", &d),
        [
            json!("data"),
            json!("Pending"),
            json!(""),
            json!(""),
            json!(""),
            json!(""),
            json!("<unset>"),
            json!("2m"),
            json!("Filesystem")
        ]
    );
    let mut bound = d;
    bound["spec"]["volumeName"] = json!("pv-1");
    bound["spec"]["storageClassName"] = json!("local");
    bound["status"] = json!({"phase": "Bound", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"]});
    assert_eq!(
        row("", "PersistentVolumeClaim", &bound)[1..6],
        [
            json!("Bound"),
            json!("pv-1"),
            json!("10Gi"),
            json!("RWO"),
            json!("local")
        ]
    );
    let mut no_modes = pvc.clone();
    no_modes["spec"]["accessModes"] = json!([]);
    assert_cause(
        &causes("", "PersistentVolumeClaim", no_modes, None),
        "spec.accessModes: Required value: at least 1 access mode is required",
    );
    let mut no_size = pvc;
    no_size["spec"]["resources"] = json!({});
    assert_cause(
        &causes("", "PersistentVolumeClaim", no_size, None),
        "spec.resources[storage]: Required value",
    );
    let mut grown = bound.clone();
    grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
    assert_eq!(
        causes("", "PersistentVolumeClaim", grown, Some(bound.clone())),
        Vec::<String>::new()
    );
    let mut shrunk = bound.clone();
    shrunk["spec"]["resources"]["requests"]["storage"] = json!("500Mi");
    assert_cause(
        &causes("", "PersistentVolumeClaim", shrunk, Some(bound.clone())),
        "spec.resources.requests.storage: Forbidden: field can not be less than previous value",
    );
    let mut remoded = bound.clone();
    remoded["spec"]["accessModes"] = json!(["ReadWriteMany"]);
    assert_cause(
        &causes("", "PersistentVolumeClaim", remoded, Some(bound)),
        "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
    );
}

#[test]
fn storage_classes_and_csi() {
    let sc = defaulted(
        "storage.k8s.io",
        "StorageClass",
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
               "metadata": {"name": "local-path", "creationTimestamp": ago(60),
                            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
               "provisioner": "rancher.io/local-path"}),
    );
    assert_eq!(sc["reclaimPolicy"], "Delete");
    assert_eq!(sc["volumeBindingMode"], "Immediate");
    assert_eq!(
        row("storage.k8s.io", "StorageClass", &sc),
        [
            json!("local-path (default)"),
            json!("rancher.io/local-path"),
            json!("Delete"),
            json!("Immediate"),
            json!(false),
            json!("60s")
        ]
    );
    let mut changed = sc.clone();
    changed["parameters"] = json!({"a": "b"});
    assert_eq!(
        causes("storage.k8s.io", "StorageClass", changed, Some(sc)),
        ["parameters: Forbidden: updates to parameters are forbidden. [FieldValueForbidden]"]
    );
    let node = json!({"metadata": {"name": "server-1", "creationTimestamp": ago(10)}, "spec": {"drivers": [{"name": "a", "nodeID": "n"}]}});
    assert_eq!(
        row("storage.k8s.io", "CSINode", &node),
        [json!("server-1"), json!(1), json!("10s")]
    );
}
