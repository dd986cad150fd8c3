//! Test component for keyvalue watches: every change it is told of is mirrored, through the
//! `bucket` resource the host hands it, under `copy.` + the key — a set is copied, a delete
//! deletes the copy. The copy landing in the backend shows the whole path works: provider →
//! host → component, and the handed bucket is a real one whose calls reach the component's
//! keyvalue link.

wit_bindgen::generate!({
    path: "../wit",
    world: "trellis-test:components/watcher-component",
    generate_all,
});

use exports::wasi::keyvalue::watcher::Guest;
use wasi::keyvalue::store::Bucket;

struct Watcher;

impl Guest for Watcher {
    fn on_set(bucket: Bucket, key: String, value: Vec<u8>) {
        // The interface has no error to return: a failure traps, and the provider delivers
        // the change again.
        if let Err(e) = bucket.set(&format!("copy.{key}"), &value) {
            panic!("cannot copy {key}: {e:?}");
        }
    }

    fn on_delete(bucket: Bucket, key: String) {
        if let Err(e) = bucket.delete(&format!("copy.{key}")) {
            panic!("cannot delete the copy of {key}: {e:?}");
        }
    }
}

export!(Watcher);
