//! The IndexedDB store of the JavaScript host (`js/store.js`) against the core's storage
//! contract, in a real browser: the same requests go to the store (as `pollOutput` hands them to
//! the host) and to the core's reference `MemoryStore`, and what survives closing and reopening
//! the database is checked.

#![cfg(target_arch = "wasm32")]

mod common;

use js_sys::{Array, Reflect, Uint8Array};
use vdev_core::{Input, MemoryStore, OutboxMeta, Record, StoreRequest};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// What `openStore` found in the database, in the core's terms.
struct StoredContents {
    meta: OutboxMeta,
    state: Option<Vec<u8>>,
}

/// The store object of `js/store.js`, spoken to in the core's requests and answers.
struct JsStore(common::Store);

impl JsStore {
    /// `openStore(name)`: the store and what the database holds.
    async fn open(name: &str) -> Result<(JsStore, StoredContents), JsValue> {
        let opened = JsFuture::from(common::open_store(name)).await?;
        let store: common::Store = get(&opened, "store").unchecked_into();
        let contents = get(&opened, "contents");
        let state = get(&contents, "state");
        let contents = StoredContents {
            meta: OutboxMeta {
                origin: get(&contents, "origin")
                    .as_string()
                    .expect("origin is a string"),
                next_seq: count(&contents, "nextSeq"),
                reserved: (!get(&contents, "reserved").is_undefined())
                    .then(|| count(&contents, "reserved")),
                count: count(&contents, "count"),
                bytes: count(&contents, "bytes"),
            },
            state: (!state.is_undefined()).then(|| bytes(&state, "state")),
        };
        Ok((JsStore(store), contents))
    }

    fn name(&self) -> String {
        self.0.name()
    }

    fn close(&self) {
        self.0.close();
    }

    /// `store.execute(requests)`, the requests converted as `pollOutput` gives them and the
    /// answers back into the core's inputs.
    async fn execute(&self, requests: &[StoreRequest]) -> Result<Vec<Input<'static>>, JsValue> {
        let requests: Array = requests.iter().map(request_to_js).collect();
        let answers = JsFuture::from(self.0.execute(&requests)).await?;
        let answers: Array = answers.dyn_into().expect("the answers are an array");
        Ok(answers.iter().map(|answer| core_input(&answer)).collect())
    }
}

/// A store request as the host's `nextOutput` hands it to the store: `pollOutput`'s text parsed,
/// with the bytes in their fields.
fn request_to_js(request: &StoreRequest) -> JsValue {
    let text = vdev_web::store_request_json(request);
    let js = js_sys::JSON::parse(&text).expect("the binding writes valid JSON");
    let set = |object: &JsValue, name: &str, data: &[u8]| {
        Reflect::set(object, &JsValue::from_str(name), &Uint8Array::from(data))
            .expect("a parsed object takes a property");
    };
    match request {
        StoreRequest::Append { records } => {
            let js_records: Array = get(&js, "records").dyn_into().expect("records");
            for (record, js_record) in records.iter().zip(js_records.iter()) {
                set(&js_record, "data", &record.data);
            }
        }
        StoreRequest::SaveState { state, .. } => set(&js, "state", state),
        _ => {}
    }
    js
}

/// An answer of `store.execute` as the core's input; panics on anything the contract does not
/// allow, so that the comparison with `MemoryStore` cannot pass by a lenient conversion.
fn core_input(answer: &JsValue) -> Input<'static> {
    let kind = get(answer, "kind").as_string();
    match kind.as_deref() {
        Some("appended") => Input::Appended {
            first: count(answer, "first"),
            last: count(answer, "last"),
        },
        Some("loaded") => {
            let records: Array = get(answer, "records")
                .dyn_into()
                .expect("loaded records are an array");
            let records = records
                .iter()
                .map(|record| Record {
                    seq: count(&record, "seq"),
                    data: bytes(&get(&record, "data"), "data"),
                })
                .collect();
            Input::Loaded { records }
        }
        Some("reserved") => Input::Reserved {
            below: count(answer, "below"),
        },
        Some("stateSaved") => Input::StateSaved {
            reported_revision: count(answer, "reportedRevision"),
        },
        _ => panic!("not an answer of the storage contract: {answer:?}"),
    }
}

fn get(object: &JsValue, name: &str) -> JsValue {
    Reflect::get(object, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED)
}

/// A non-negative integer field (sequence number, count, size).
fn count(object: &JsValue, name: &str) -> u64 {
    let value = get(object, name).as_f64();
    match value {
        Some(n) if n >= 0.0 && n.fract() == 0.0 => n as u64,
        _ => panic!("{name} is not a count: {value:?} in {object:?}"),
    }
}

/// A `Uint8Array` field's bytes.
fn bytes(value: &JsValue, what: &str) -> Vec<u8> {
    value
        .dyn_ref::<Uint8Array>()
        .unwrap_or_else(|| panic!("{what} is not a Uint8Array: {value:?}"))
        .to_vec()
}

fn records(seqs: std::ops::Range<u64>, size: usize) -> Vec<Record> {
    seqs.map(|seq| Record {
        seq,
        data: vec![seq as u8; size],
    })
    .collect()
}

fn append(seqs: std::ops::Range<u64>, size: usize) -> StoreRequest {
    StoreRequest::Append {
        records: records(seqs, size),
    }
}

fn load(from: u64, max_count: usize, max_bytes: usize) -> StoreRequest {
    StoreRequest::Load {
        from,
        max_count,
        max_bytes,
    }
}

fn loaded_seqs(answers: &[Input<'static>]) -> Vec<Vec<u64>> {
    answers
        .iter()
        .filter_map(|answer| match answer {
            Input::Loaded { records } => Some(records.iter().map(|r| r.seq).collect()),
            _ => None,
        })
        .collect()
}

/// Opens a fresh database with a unique name.
async fn fresh() -> (JsStore, StoredContents) {
    JsStore::open(&common::unique("vdev-store-test"))
        .await
        .expect("a new database opens")
}

async fn reopen(store: JsStore) -> (JsStore, StoredContents) {
    let name = store.name();
    store.close();
    JsStore::open(&name).await.expect("the database reopens")
}

async fn discard(store: JsStore) {
    let name = store.name();
    store.close();
    common::delete_database(&name)
        .await
        .expect("the database is deleted");
}

#[wasm_bindgen_test]
async fn a_new_database_holds_nothing_and_keeps_the_origin_a_reservation_brings() {
    let (store, contents) = fresh().await;
    assert_eq!(
        contents.meta.origin, "",
        "no origin until the core makes one"
    );
    assert_eq!(
        (
            contents.meta.next_seq,
            contents.meta.count,
            contents.meta.bytes
        ),
        (0, 0, 0)
    );
    assert_eq!(contents.state, None);
    let answers = store
        .execute(&[StoreRequest::Reserve {
            below: 4_096,
            origin: Some("f00d".into()),
        }])
        .await
        .expect("the reservation commits");
    assert_eq!(answers, [Input::Reserved { below: 4_096 }]);
    let (store, contents) = reopen(store).await;
    assert_eq!(
        (contents.meta.origin.as_str(), contents.meta.reserved),
        ("f00d", Some(4_096)),
        "the origin and the reservation are kept together"
    );
    discard(store).await;
}

#[wasm_bindgen_test]
async fn answers_like_the_memory_store() {
    let (store, contents) = fresh().await;
    let mut reference = MemoryStore::new(contents.meta.origin.clone());
    let batches = vec![
        vec![append(0..10, 10)],
        vec![load(3, 2, 1_000), load(8, 10, 15), load(0, 10, 1)],
        vec![
            StoreRequest::Remove {
                seqs: vec![0, 1, 2],
                bytes: 30,
            },
            append(10..12, 7),
            load(0, 100, 1 << 20),
        ],
        // Runs and single records: 4, 6-7 and 9 go, 5 and 8 stay.
        vec![
            StoreRequest::Remove {
                seqs: vec![4, 6, 7, 9],
                bytes: 40,
            },
            load(0, 100, 1 << 20),
        ],
        vec![load(20, 5, 100)],
        vec![
            StoreRequest::Reserve {
                below: 4_096,
                origin: Some("o1".into()),
            },
            append(12..14, 3),
        ],
        vec![StoreRequest::Reserve {
            below: 8_192,
            origin: None,
        }],
    ];
    for batch in batches {
        let answers = store.execute(&batch).await.expect("the batch commits");
        let expected: Vec<Input<'static>> = batch
            .iter()
            .cloned()
            .filter_map(|request| reference.execute(request))
            .collect();
        assert_eq!(answers, expected, "answers to {batch:?}");
    }
    let (store, contents) = reopen(store).await;
    assert_eq!(contents.meta, reference.meta());
    discard(store).await;
}

#[wasm_bindgen_test]
async fn everything_survives_reopening_and_the_high_water_mark_outlives_removal() {
    let (store, _) = fresh().await;
    let origin = "keep1".to_owned();
    let state = br#"{"device_id":"d1"}"#.to_vec();
    let answers = store
        .execute(&[
            StoreRequest::Reserve {
                below: 4_096,
                origin: Some(origin.clone()),
            },
            append(0..5, 4),
            StoreRequest::SaveState {
                state: state.clone(),
                reported_revision: 7,
            },
        ])
        .await
        .expect("the batch commits");
    assert_eq!(
        answers,
        [
            Input::Reserved { below: 4_096 },
            Input::Appended { first: 0, last: 4 },
            Input::StateSaved {
                reported_revision: 7
            }
        ],
        "each request answered, the revision handed back"
    );

    let (store, contents) = reopen(store).await;
    assert_eq!(
        contents.meta,
        OutboxMeta {
            origin: origin.clone(),
            next_seq: 5,
            reserved: Some(4_096),
            count: 5,
            bytes: 20
        }
    );
    assert_eq!(contents.state.as_deref(), Some(state.as_slice()));
    let answers = store.execute(&[load(0, 10, 1_000)]).await.unwrap();
    assert_eq!(
        answers,
        vec![Input::Loaded {
            records: records(0..5, 4)
        }]
    );

    store
        .execute(&[StoreRequest::Remove {
            seqs: vec![0, 1, 2, 3, 4],
            bytes: 20,
        }])
        .await
        .unwrap();
    let (store, contents) = reopen(store).await;
    assert_eq!(
        contents.meta,
        OutboxMeta {
            origin: origin.clone(),
            next_seq: 5,
            reserved: Some(4_096),
            count: 0,
            bytes: 0
        },
        "the high-water mark is kept after every record is removed"
    );
    assert_eq!(
        loaded_seqs(&store.execute(&[load(0, 10, 1_000)]).await.unwrap()),
        [Vec::<u64>::new()]
    );
    let newer = br#"{"device_id":"d2"}"#.to_vec();
    store
        .execute(&[StoreRequest::SaveState {
            state: newer.clone(),
            reported_revision: 8,
        }])
        .await
        .unwrap();
    let (store, contents) = reopen(store).await;
    assert_eq!(contents.meta.origin, origin, "the origin never changes");
    assert_eq!(
        contents.state.as_deref(),
        Some(newer.as_slice()),
        "one state blob, replaced"
    );
    discard(store).await;
}

#[wasm_bindgen_test]
async fn a_batch_sees_its_own_appends_and_removes() {
    let (store, _) = fresh().await;
    let answers = store
        .execute(&[
            append(0..3, 2),
            load(0, 10, 100),
            StoreRequest::Remove {
                seqs: vec![1],
                bytes: 2,
            },
            load(0, 10, 100),
        ])
        .await
        .unwrap();
    assert_eq!(answers[0], Input::Appended { first: 0, last: 2 });
    assert_eq!(loaded_seqs(&answers), [vec![0, 1, 2], vec![0, 2]]);
    discard(store).await;
}

#[wasm_bindgen_test]
async fn a_record_that_is_not_bytes_loads_as_empty_for_the_core_to_reject() {
    // Something other than this store wrote a string under a sequence number.
    let (store, _) = fresh().await;
    let name = store.name();
    store.execute(&[append(0..2, 3)]).await.unwrap();
    store.close();
    let factory = idb::Factory::new().unwrap();
    let database = factory.open(&name, None).unwrap().await.unwrap();
    let transaction = database
        .transaction(&["records"], idb::TransactionMode::ReadWrite)
        .unwrap();
    transaction
        .object_store("records")
        .unwrap()
        .put(
            &wasm_bindgen::JsValue::from_str("junk"),
            Some(&wasm_bindgen::JsValue::from_f64(0.0)),
        )
        .unwrap()
        .await
        .unwrap();
    transaction.commit().unwrap().await.unwrap();
    database.close();

    let (store, _) = JsStore::open(&name).await.unwrap();
    let answers = store.execute(&[load(0, 10, 100)]).await.unwrap();
    let mut expected = records(0..2, 3);
    expected[0].data.clear();
    assert_eq!(answers, vec![Input::Loaded { records: expected }]);
    discard(store).await;
}

/// Writes `value` under `key` in the `meta` object store, as something else than this store
/// would (or as a rolled-back update leaves it).
async fn put_meta(name: &str, key: &str, value: wasm_bindgen::JsValue) {
    let factory = idb::Factory::new().unwrap();
    let database = factory.open(name, None).unwrap().await.unwrap();
    let transaction = database
        .transaction(&["meta"], idb::TransactionMode::ReadWrite)
        .unwrap();
    transaction
        .object_store("meta")
        .unwrap()
        .put(&value, Some(&wasm_bindgen::JsValue::from_str(key)))
        .unwrap()
        .await
        .unwrap();
    transaction.commit().unwrap().await.unwrap();
    database.close();
}

#[wasm_bindgen_test]
async fn a_high_water_mark_that_lost_an_update_is_raised_to_the_highest_record() {
    let (store, _) = fresh().await;
    let name = store.name();
    store.execute(&[append(0..3, 2)]).await.unwrap();
    store.close();
    put_meta(&name, "nextSeq", wasm_bindgen::JsValue::from_f64(1.0)).await;

    let (store, contents) = JsStore::open(&name).await.unwrap();
    assert_eq!(
        contents.meta.next_seq, 3,
        "the stored records' numbers are never handed out again"
    );
    discard(store).await;
}

#[wasm_bindgen_test]
async fn a_reservation_is_kept_and_answered_and_never_lowered() {
    let (store, _) = fresh().await;
    let answers = store
        .execute(&[StoreRequest::Reserve {
            below: 8_192,
            origin: None,
        }])
        .await
        .unwrap();
    assert_eq!(answers, vec![Input::Reserved { below: 8_192 }]);
    store
        .execute(&[StoreRequest::Reserve {
            below: 4_096,
            origin: None,
        }])
        .await
        .unwrap();
    let (store, contents) = reopen(store).await;
    assert_eq!(contents.meta.reserved, Some(8_192));
    discard(store).await;
}

#[wasm_bindgen_test]
async fn a_reservation_that_cannot_be_read_starts_a_new_origin_and_the_app_is_told() {
    let (store, _) = fresh().await;
    let name = store.name();
    store
        .execute(&[
            StoreRequest::Reserve {
                below: 4_096,
                origin: Some("keep1".into()),
            },
            append(0..3, 2),
        ])
        .await
        .unwrap();
    store.close();
    put_meta(&name, "reserved", JsValue::from_str("not a number")).await;

    let (store, contents) = JsStore::open(&name).await.unwrap();
    assert_eq!(
        (contents.meta.origin.as_str(), contents.meta.reserved),
        ("keep1", None),
        "the store hands over what it holds, unjudged"
    );
    store.close();
    // The core judges: numbers under keep1 are unknown, so a new origin, and the app hears why.
    let (events, on_event) = common::Recorder::new();
    let client = common::DeviceClient::start(common::js_object(&[
        ("instance", "http://127.0.0.1:9".into()),
        ("provisioningToken", "token".into()),
        ("database", name.as_str().into()),
        ("onEvent", on_event.into()),
    ]))
    .await
    .expect("the client starts");
    common::wait_until("an outboxRecovered event", 5_000.0, || {
        events.first_args().iter().any(|event| {
            common::field_string(event, "kind").as_deref() == Some("outboxRecovered")
                && common::field_string(event, "reason").is_some_and(|reason| {
                    reason.contains("new messages are numbered under a new origin")
                })
        })
    })
    .await;
    JsFuture::from(js_sys::Promise::from(JsValue::from(client.stop())))
        .await
        .expect("stop resolves");
    common::delete_database(&name).await.expect("deleted");
}
