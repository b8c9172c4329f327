//! kpimon._native: the compiled batch core (docs/architecture.md, "The batch core").
//!
//! One call per partition batch: `Core.process` reads the batch's records and the states of their users
//! (Python `UserState` objects, through the caller's `get`), applies every message it is certain of, and
//! returns the changed states (the same objects, updated in place only at the end, so an error before
//! then leaves them untouched), the outcome counts, the delays and the indices of the records it left to
//! the Python engine; the batch's counter runs, collapsed, go straight into the partition's counters. A record is left to Python when the core is not
//! certain of it (unusual JSON, anything invalid, unkeyed records, new segment values, wide bitmaps,
//! users with surveys whose click changes their activity); once one record of a user is left, the
//! user's later records of the batch are too, so Python sees each user's records in offset order.

mod bits;
mod engine;
mod json;
mod wire;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Once;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use rustc_hash::{FxHashMap, FxHashSet};

pyo3::create_exception!(
    _native,
    ApplyError,
    PyRuntimeError,
    "The core failed while writing a batch's results: states or counters may be partly updated."
);

pyo3::create_exception!(
    _native,
    CorePanic,
    PyRuntimeError,
    "The core panicked before it wrote anything: nothing changed, the Python engine can take the batch."
);

/// Where `process` panics on purpose (tests only, `_set_failpoint`): 0 nowhere, else a `FAILPOINTS` index + 1.
static FAILPOINT: AtomicU8 = AtomicU8::new(0);
const FAILPOINTS: [&str; 2] = ["compute", "write"];

fn failpoint(name: &str) {
    let at = FAILPOINT.load(Ordering::Relaxed);
    if at != 0 && FAILPOINTS[at as usize - 1] == name {
        panic!("failpoint {name:?} (kpimon._native._set_failpoint, tests only)");
    }
}

thread_local! {
    /// Whether this thread runs a phase of `process` under `guarded` (its panics are reported as
    /// Python exceptions, so the panic hook must not print them too).
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    /// The message and location of the last panic caught by `guarded` on this thread.
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Install, once, a panic hook that keeps the message of a panic inside `guarded` for its Python
/// exception (one log record with the cause, instead of a bare stderr line from the default hook), and
/// leaves every other panic to the hook that was there before.
fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) {
                // One line (the default display puts the message on a line of its own): "message (at file:line:col)".
                let message = info.payload_as_str().unwrap_or("a panic");
                let text = match info.location() {
                    Some(at) => format!("{message} (at {at})"),
                    None => message.to_owned(),
                };
                PANIC.with(|p| *p.borrow_mut() = Some(text));
            } else {
                previous(info);
            }
        }));
    });
}

/// Run `phase`, turning a Rust panic into a Python exception made by `error` (from the panic's message)
/// instead of PyO3's PanicException, a BaseException that `except Exception` does not catch and that
/// would end the worker.
fn guarded<T>(phase: impl FnOnce() -> PyResult<T>, error: impl FnOnce(String) -> PyErr) -> PyResult<T> {
    let outer = GUARDED.with(|g| g.replace(true));
    let outcome = catch_unwind(AssertUnwindSafe(phase));
    GUARDED.with(|g| g.set(outer));
    outcome.unwrap_or_else(|payload| {
        // The hook's text; a panic resumed through a Python callback (PyO3 resumes a PanicException
        // without calling the hook) has only its payload.
        let text = PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| {
            payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned())
        });
        Err(error(text))
    })
}

use bits::U256;
use engine::{Fact, Run, State, COUNTERS, DIMENSIONS, DIM_STAGE, HORIZON, ONBOARDING_DAYS, STATE_HORIZON};

/// Dimensions of the segments the core emits runs for: the state's DIMENSIONS, then `engagement`
/// (streams.crossed's level segments, never stored in a state).
const SEGMENT_DIMENSIONS: [&str; 5] = ["all", "platform", "plan", "stage", "engagement"];
const DIM_ENGAGEMENT: u8 = 4;
/// streams.crossed.LEVELS.
const LEVELS: [&str; 4] = ["none", "light", "regular", "heavy"];
const SURVEYS: [&str; 2] = ["nps", "csat"];
const ACTIONS: [&str; 3] = ["shown", "answered", "dismissed"];
/// streams.events.SCORE_RANGE by survey.
const SCORE_RANGE: [(i64, i64); 2] = [(0, 10), (1, 5)];

const MS_PER_DAY: i64 = 86_400_000;

/// One segment's runs of a batch, collapsed: the counters' difference vectors by day (PartitionCounters'
/// layout) and the (first, last) day spans they came from.
type SegmentDiffs = (FxHashMap<i64, [i64; COUNTERS.len()]>, FxHashSet<(i64, i64)>);

/// Segments of one call, interned: (dimension code, value) -> id, and the Python key of each id.
struct Segments<'py> {
    ids: [FxHashMap<String, u32>; 5],
    list: Vec<(u8, String, Option<Bound<'py, PyAny>>)>,
}

impl<'py> Segments<'py> {
    fn new() -> Self {
        Segments {
            ids: Default::default(),
            list: Vec::new(),
        }
    }

    fn id(&mut self, dim: u8, value: &str, key: Option<&Bound<'py, PyAny>>) -> u32 {
        if let Some(id) = self.ids[dim as usize].get(value) {
            return *id;
        }
        let id = self.list.len() as u32;
        self.ids[dim as usize].insert(value.to_owned(), id);
        self.list.push((dim, value.to_owned(), key.cloned()));
        id
    }

    fn key(&mut self, py: Python<'py>, id: u32) -> PyResult<Bound<'py, PyAny>> {
        let (dim, value, key) = &mut self.list[id as usize];
        if let Some(key) = key {
            return Ok(key.clone());
        }
        let tuple = PyTuple::new(py, [SEGMENT_DIMENSIONS[*dim as usize], value.as_str()])?.into_any();
        *key = Some(tuple.clone());
        Ok(tuple)
    }
}

struct User<'py> {
    key: Bound<'py, PyAny>,
    /// The state object from the table (None for a user the table does not hold yet).
    object: Option<Bound<'py, PyAny>>,
    state: State<Bound<'py, PyAny>>,
    /// Whether the table holds the user (a state written in this batch counts).
    in_table: bool,
    delegated: bool,
    dirty: bool,
}

fn int_u256(value: &Bound<'_, PyAny>) -> Option<U256> {
    value
        .extract::<u128>()
        .ok()
        .map(U256::from_u128)
        .filter(|b| b.bit_length() <= engine::MAX_STATE_BITS)
}

/// The core's view of a Python UserState; None when it cannot take it (the user goes to Python).
fn load_state<'py>(
    object: &Bound<'py, PyAny>,
    segments: &mut Segments<'py>,
) -> PyResult<Option<State<Bound<'py, PyAny>>>> {
    let py = object.py();
    let mut state = State::new();
    state.base = object.getattr(intern!(py, "base"))?.extract()?;
    let stored = object.getattr(intern!(py, "segments"))?;
    let stored = stored.downcast::<PyDict>()?;
    for (key, bits) in stored.iter() {
        let tuple = key.downcast::<PyTuple>()?;
        let dim = tuple.get_item(0)?;
        let dim = dim.downcast::<PyString>()?.to_str()?;
        let Some(code) = DIMENSIONS.iter().position(|d| *d == dim) else {
            return Ok(None);
        };
        let value = tuple.get_item(1)?;
        let value = value.downcast::<PyString>()?.to_str()?;
        let Some(bits) = int_u256(&bits) else {
            return Ok(None);
        };
        let id = segments.id(code as u8, value, Some(&key));
        state.segments.push((id, bits));
    }
    let Some(explicit_new) = int_u256(&object.getattr(intern!(py, "explicit_new"))?) else {
        return Ok(None);
    };
    state.explicit_new = explicit_new;
    state.first_active = object.getattr(intern!(py, "first_active"))?.extract()?;
    state.first_active_unsigned = object.getattr(intern!(py, "first_active_unsigned"))?.extract()?;
    state.first_seen = object.getattr(intern!(py, "first_seen"))?.extract()?;
    state.last_seen = object.getattr(intern!(py, "last_seen"))?.extract()?;
    state.partition = object.getattr(intern!(py, "partition"))?.extract()?;
    let surveys = object.getattr(intern!(py, "surveys"))?;
    let surveys = surveys.downcast::<PyDict>()?;
    for (event_id, fact) in surveys.iter() {
        let fact = fact.downcast::<PyTuple>()?;
        if fact.len() != 8 {
            return Ok(None);
        }
        let survey = fact.get_item(1)?;
        let action = fact.get_item(2)?;
        let (Some(survey), Some(action)) = (
            SURVEYS.iter().position(|s| {
                *s == survey
                    .downcast::<PyString>()
                    .map_or("", |s| s.to_str().unwrap_or(""))
            }),
            ACTIONS.iter().position(|a| {
                *a == action
                    .downcast::<PyString>()
                    .map_or("", |s| s.to_str().unwrap_or(""))
            }),
        ) else {
            return Ok(None);
        };
        let text: String = event_id.extract()?;
        let name = |i: usize| fact.get_item(i).ok().and_then(|v| v.extract::<String>().ok());
        let (Some(platform), Some(plan), Some(stage)) = (name(4), name(5), name(6)) else {
            return Ok(None);
        };
        let names = [platform, plan, stage];
        state.surveys.push(Fact {
            key: Some(event_id),
            event_id: text,
            day: fact.get_item(0)?.extract()?,
            survey: survey as u8,
            action: action as u8,
            score: fact.get_item(3)?.extract()?,
            ms: fact.get_item(7)?.extract()?,
            segments: (0, 0, 0),
            names: Some(names),
        });
    }
    Ok(Some(state))
}

/// Write a changed state into its Python object (a new one for a new user).
fn store_state<'py>(
    py: Python<'py>,
    user: &User<'py>,
    state_class: &Bound<'py, PyAny>,
    segments: &mut Segments<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    let object = match &user.object {
        Some(object) => object.clone(),
        None => state_class.call0()?,
    };
    let state = &user.state;
    let to_int = |bits: U256| {
        bits.to_u128()
            .ok_or_else(|| PyValueError::new_err("bitmap beyond 128 bits"))
    };
    let stored = PyDict::new(py);
    for (id, bits) in &state.segments {
        stored.set_item(segments.key(py, *id)?, to_int(*bits)?)?;
    }
    object.setattr(intern!(py, "base"), state.base)?;
    object.setattr(intern!(py, "segments"), stored)?;
    object.setattr(intern!(py, "explicit_new"), to_int(state.explicit_new)?)?;
    object.setattr(intern!(py, "first_active"), state.first_active)?;
    object.setattr(intern!(py, "first_active_unsigned"), state.first_active_unsigned)?;
    object.setattr(intern!(py, "first_seen"), state.first_seen)?;
    object.setattr(intern!(py, "last_seen"), state.last_seen)?;
    object.setattr(intern!(py, "partition"), state.partition)?;
    if !state.removed_surveys.is_empty() || state.surveys.iter().any(|f| f.key.is_none()) {
        // Expired facts first, then the batch's new ones (in arrival order): the dict's order is then
        // the one the Python engine's inserts and deletes leave.
        let surveys = object.getattr(intern!(py, "surveys"))?;
        for event_id in &state.removed_surveys {
            surveys.del_item(event_id)?;
        }
        for fact in state.surveys.iter().filter(|f| f.key.is_none()) {
            let (platform, plan, stage) = fact.segments;
            let value = (
                fact.day,
                SURVEYS[fact.survey as usize],
                ACTIONS[fact.action as usize],
                fact.score,
                segments.list[platform as usize].1.as_str(),
                segments.list[plan as usize].1.as_str(),
                segments.list[stage as usize].1.as_str(),
                fact.ms,
            );
            surveys.set_item(fact.event_id.as_str(), value)?;
        }
    }
    Ok(object)
}

/// `UserState.to_bytes` of a changed state (the changelog bytes), from the core's view of it.
fn encode_state(state: &State<Bound<'_, PyAny>>, segments: &Segments<'_>) -> Vec<u8> {
    let name = |id: u32| segments.list[id as usize].1.as_str();
    let surveys = state
        .surveys
        .iter()
        .map(|fact| wire::WireFact {
            event_id: fact.event_id.as_str(),
            day: fact.day,
            survey: SURVEYS[fact.survey as usize],
            action: ACTIONS[fact.action as usize],
            score: fact.score,
            names: match &fact.names {
                Some([platform, plan, stage]) => [platform.as_str(), plan.as_str(), stage.as_str()],
                None => [
                    name(fact.segments.0),
                    name(fact.segments.1),
                    name(fact.segments.2),
                ],
            },
            ms: fact.ms,
        })
        .collect();
    wire::encode(&wire::WireState {
        base: state.base,
        segments: state
            .segments
            .iter()
            .map(|(id, bits)| (segments.list[*id as usize].0, name(*id), *bits))
            .collect(),
        explicit_new: state.explicit_new,
        first_active: state.first_active,
        first_active_unsigned: state.first_active_unsigned,
        first_seen: state.first_seen,
        surveys,
        last_seen: state.last_seen,
        partition: state.partition,
    })
}

/// The batch core of one worker: its settings, fixed at construction.
#[pyclass(frozen, module = "kpimon._native")]
struct Core {
    passive_types: HashSet<String>,
    policy_lateness_days: i64,
    engine_lateness_days: i64,
    max_future_ms: i64,
    max_message_bytes: usize,
}

/// Per-call context of the message loop.
struct Batch<'py> {
    segments: Segments<'py>,
    users: Vec<User<'py>>,
    by_key: FxHashMap<Vec<u8>, usize>,
    pending: FxHashMap<(u32, Run), i64>,
    kept: [HashSet<String>; 2],
    /// Per folded dimension, whether values the folder has not kept yet may be folded here: only when
    /// the batch holds no more such values than the folder has room for, so that no value of the batch
    /// can be folded by the cap, whatever the order (then each value's fate is the same in any order).
    /// The value -> personal cache of SegmentFolder.personal.
    new_values: [Option<FxHashMap<String, bool>>; 2],
    folder: Bound<'py, PyAny>,
    /// SegmentFolder.fold calls the Python engine would have made for new values, replayed in order
    /// when the batch is applied (they add the value to the kept ones, or count a personal fold).
    folds: Vec<(u8, String)>,
    all: u32,
    levels: [u32; 4],
    onboarding: u32,
    established: u32,
    max_day: Option<i64>,
}

impl Batch<'_> {
    /// SegmentFolder.fold: the segment id of the value an event of `value` counts under, and whether the
    /// folder must be told (a value it has not kept yet); None when this batch cannot decide it.
    fn fold(&mut self, dim: u8, value: Option<&str>) -> PyResult<Option<(u32, bool)>> {
        let (value, new) = match value {
            None => ("unknown", false),
            Some(v @ ("unknown" | "other")) => (v, false),
            Some(v) if self.kept[dim as usize - 1].contains(v) => (v, false),
            Some(v) => {
                let Some(cache) = &mut self.new_values[dim as usize - 1] else {
                    return Ok(None);
                };
                let personal = match cache.get(v) {
                    Some(personal) => *personal,
                    None => {
                        let personal: bool = self
                            .folder
                            .call_method1(intern!(self.folder.py(), "personal"), (v,))?
                            .extract()?;
                        cache.insert(v.to_owned(), personal);
                        personal
                    }
                };
                (if personal { "other" } else { v }, true)
            }
        };
        Ok(Some((self.segments.id(dim, value, None), new)))
    }

    fn has_new_value(&self, ev: &json::Event<'_>) -> bool {
        [ev.platform, ev.plan].into_iter().enumerate().any(|(i, value)| {
            value.is_some_and(|v| v != "unknown" && v != "other" && !self.kept[i].contains(v))
        })
    }

    /// Note the folder calls of an event that is being applied (its new values, in order).
    fn note_folds(&mut self, platform: (Option<&str>, bool), plan: (Option<&str>, bool)) {
        for (dim, (value, new)) in [(1u8, platform), (2u8, plan)] {
            if let (Some(value), true) = (value, new) {
                self.folds.push((dim, value.to_owned()));
            }
        }
    }
}

impl Core {
    /// Apply one decoded, checked click to its user; false (and nothing changed) when it goes to Python.
    fn click(
        &self,
        batch: &mut Batch<'_>,
        user: usize,
        ev: &json::Event<'_>,
        day: i64,
        partition: i64,
        now_ms: i64,
    ) -> PyResult<bool> {
        let signup_day = ev.signup_ms.map(|ms| ms.div_euclid(MS_PER_DAY));
        let (Some((platform, new_platform)), Some((plan, new_plan))) =
            (batch.fold(1, ev.platform)?, batch.fold(2, ev.plan)?)
        else {
            return Ok(false);
        };
        let passive = self.passive_types.contains(ev.typ);
        let state = &batch.users[user].state;
        let first_seen = state.first_seen.map_or(day, |f| f.min(day));
        let stage = if day - signup_day.unwrap_or(first_seen) < ONBOARDING_DAYS {
            batch.onboarding
        } else {
            batch.established
        };
        let segments = [batch.all, platform, plan, stage];
        let known = passive || state.is_known(day, signup_day, &segments);
        if !known && !state.fits(day) {
            return Ok(false);
        }
        batch.note_folds((ev.platform, new_platform), (ev.plan, new_plan));
        batch.max_day = Some(batch.max_day.map_or(day, |d| d.max(day)));
        let Batch {
            users,
            pending,
            segments: segs,
            all,
            levels,
            ..
        } = batch;
        let u = &mut users[user];
        let mut write = !u.in_table;
        write |= u.state.note_seen(day);
        if !known {
            let mut emit = |s: u32, run: Run| *pending.entry((s, run)).or_insert(0) += 1;
            let (old_bits, old_base) = (u.state.bits_of(*all), u.state.base);
            u.state.record_change(
                day,
                signup_day,
                &segments,
                |s| segs.list[s as usize].0 != DIM_STAGE,
                &mut emit,
            );
            u.state
                .click_surveys(*all, levels, day, old_bits, old_base, &mut emit);
            write = true;
        }
        if write {
            self.written(u, partition, now_ms);
        }
        Ok(true)
    }

    /// What the engine does to a state it writes: expire old days and surveys, note the partition.
    fn written(&self, u: &mut User<'_>, partition: i64, now_ms: i64) {
        let oldest = now_ms.div_euclid(MS_PER_DAY) - self.engine_lateness_days;
        u.state.expire(oldest - STATE_HORIZON, oldest - HORIZON);
        u.state.partition = partition;
        u.dirty = true;
        u.in_table = true;
    }

    /// Apply one decoded survey event to its user: Some(true) accepted, Some(false) a duplicate (its
    /// event_id was seen), None when it goes to Python (and nothing changed).
    fn survey(
        &self,
        batch: &mut Batch<'_>,
        user: usize,
        ev: &json::Event<'_>,
        day: i64,
        partition: i64,
        now_ms: i64,
    ) -> PyResult<Option<bool>> {
        let (low, high) = SCORE_RANGE[ev.survey as usize];
        match (ev.action, ev.score) {
            (json::ANSWERED, Some(score)) if low <= score && score <= high => {}
            (json::SHOWN | json::DISMISSED, None) => {}
            _ => return Ok(None), // score_missing, score_out_of_range, score_forbidden: Python words them
        }
        if batch.users[user]
            .state
            .surveys
            .iter()
            .any(|f| f.event_id == ev.event_id)
        {
            return Ok(Some(false)); // the first of an event_id wins (docs/events.md, "Duplicates")
        }
        let signup_day = ev.signup_ms.map(|ms| ms.div_euclid(MS_PER_DAY));
        let (Some((platform, new_platform)), Some((plan, new_plan))) =
            (batch.fold(1, ev.platform)?, batch.fold(2, ev.plan)?)
        else {
            return Ok(None);
        };
        batch.note_folds((ev.platform, new_platform), (ev.plan, new_plan));
        batch.max_day = Some(batch.max_day.map_or(day, |d| d.max(day)));
        let Batch {
            users,
            pending,
            all,
            levels,
            onboarding,
            established,
            ..
        } = batch;
        let u = &mut users[user];
        u.state.note_seen(day);
        let first_seen = u.state.first_seen.unwrap_or(day);
        let stage = if day - signup_day.unwrap_or(first_seen) < ONBOARDING_DAYS {
            *onboarding
        } else {
            *established
        };
        let answered_nps = ev.survey == json::NPS && ev.score.is_some();
        let fact = Fact {
            key: None,
            event_id: ev.event_id.to_owned(),
            day,
            survey: ev.survey,
            action: ev.action,
            score: ev.score.unwrap_or(-1),
            ms: if answered_nps {
                ev.ts_ms.rem_euclid(MS_PER_DAY)
            } else {
                0
            },
            segments: (platform, plan, stage),
            names: None,
        };
        let mut emit = |s: u32, run: Run| *pending.entry((s, run)).or_insert(0) += 1;
        u.state
            .record_survey(fact, *all, levels, [*all, platform, plan, stage], &mut emit);
        self.written(u, partition, now_ms);
        Ok(Some(true))
    }

    /// The user index of `key`, loading its state on first sight.
    fn user<'py>(
        &self,
        batch: &mut Batch<'py>,
        key: &Bound<'py, PyAny>,
        bytes: &[u8],
        get_state: &Bound<'py, PyAny>,
    ) -> PyResult<usize> {
        if let Some(index) = batch.by_key.get(bytes) {
            return Ok(*index);
        }
        let object = get_state.call1((key,))?;
        let (object, state, delegated) = if object.is_none() {
            (None, State::new(), false)
        } else {
            match load_state(&object, &mut batch.segments)? {
                Some(state) => (Some(object), state, false),
                None => (Some(object), State::new(), true),
            }
        };
        let in_table = object.is_some();
        batch.users.push(User {
            key: key.clone(),
            object,
            state,
            in_table,
            delegated,
            dirty: false,
        });
        batch.by_key.insert(bytes.to_vec(), batch.users.len() - 1);
        Ok(batch.users.len() - 1)
    }
}

/// A record of the batch to process (offsets already applied are left out).
struct Row<'py> {
    index: usize,
    /// The key (bytes), None when unkeyed.
    key: Option<Bound<'py, PyAny>>,
    value: Option<Bound<'py, PyBytes>>,
}

impl Core {
    fn rows<'py>(
        &self,
        py: Python<'py>,
        records: &Bound<'py, PyAny>,
        next_offset: i64,
    ) -> PyResult<Vec<Row<'py>>> {
        let mut rows = Vec::new();
        for (index, record) in records.try_iter()?.enumerate() {
            let record = record?;
            let offset: i64 = record.getattr(intern!(py, "offset"))?.extract()?;
            if offset < next_offset {
                continue; // already applied (the Python engine skips it too)
            }
            let key = record.getattr(intern!(py, "key"))?;
            let key = if key.downcast::<PyBytes>().is_ok() {
                Some(key)
            } else {
                None
            };
            let value = record
                .getattr(intern!(py, "value"))?
                .downcast_into::<PyBytes>()
                .ok();
            rows.push(Row { index, key, value });
        }
        Ok(rows)
    }

    /// Batch.new_values: for each folded dimension, whether the batch's values the folder has not kept
    /// fit in its room. Every keyed record counts (accepted or not: a superset of what the Python engine
    /// would fold); a record this reader cannot decode might hold any value, so then none may be folded.
    fn new_values(
        &self,
        kind: u8,
        rows: &[Row<'_>],
        kept: &[HashSet<String>; 2],
        max_values: usize,
    ) -> [Option<FxHashMap<String, bool>>; 2] {
        let mut seen: [FxHashSet<&str>; 2] = Default::default();
        for row in rows {
            let (Some(_), Some(value)) = (&row.key, &row.value) else {
                continue;
            };
            if value.as_bytes().len() > self.max_message_bytes {
                continue; // too large: rejected before anything is folded
            }
            let Some(ev) = json::decode(kind, value.as_bytes()) else {
                return [None, None];
            };
            for (i, value) in [ev.platform, ev.plan].into_iter().enumerate() {
                if let Some(v) = value {
                    if v != "unknown" && v != "other" && !kept[i].contains(v) {
                        seen[i].insert(v);
                    }
                }
            }
        }
        [0, 1].map(|i| (kept[i].len() + seen[i].len() <= max_values).then(FxHashMap::default))
    }
}

#[pymethods]
impl Core {
    #[new]
    #[pyo3(signature = (passive_types, policy_lateness_days, engine_lateness_days, max_future_ms, max_message_bytes))]
    fn new(
        passive_types: HashSet<String>,
        policy_lateness_days: i64,
        engine_lateness_days: i64,
        max_future_ms: i64,
        max_message_bytes: usize,
    ) -> Self {
        Core {
            passive_types,
            policy_lateness_days,
            engine_lateness_days,
            max_future_ms,
            max_message_bytes,
        }
    }

    /// The (kpi, window) of each counter index, as the core numbers them (PartitionCounters' order).
    #[staticmethod]
    fn counters() -> Vec<(&'static str, &'static str)> {
        COUNTERS.to_vec()
    }

    /// Process one batch of a clicks or surveys partition; see the module documentation for what it
    /// returns. The batch's runs are applied to `counters` (a PartitionCounters, through `run_target`).
    #[pyo3(signature = (kind, records, next_offset, get_state, state_class, counters, folder, now_ms, partition))]
    #[allow(clippy::too_many_arguments)]
    fn process<'py>(
        &self,
        py: Python<'py>,
        kind: &str,
        records: &Bound<'py, PyAny>,
        next_offset: i64,
        get_state: &Bound<'py, PyAny>,
        state_class: &Bound<'py, PyAny>,
        counters: &Bound<'py, PyAny>,
        folder: &Bound<'py, PyAny>,
        now_ms: i64,
        partition: i64,
    ) -> PyResult<Bound<'py, PyTuple>> {
        // The compute phase: it reads the records, the states and the folder, and changes nothing
        // Python sees, so an error or a panic here leaves the batch to the Python engine as it was.
        let computed = guarded(
            || {
                let kind = match kind {
                    "clicks" => json::CLICKS,
                    "surveys" => json::SURVEYS,
                    _ => return Err(PyValueError::new_err(format!("unknown topic kind {kind:?}"))),
                };
                let mut segments = Segments::new();
                let all = segments.id(0, "all", None);
                let levels = LEVELS.map(|level| segments.id(DIM_ENGAGEMENT, level, None));
                let onboarding = segments.id(DIM_STAGE, "onboarding", None);
                let established = segments.id(DIM_STAGE, "established", None);
                let kept: [HashSet<String>; 2] = [
                    folder
                        .call_method1(intern!(py, "kept"), ("platform",))?
                        .extract()?,
                    folder.call_method1(intern!(py, "kept"), ("plan",))?.extract()?,
                ];
                let max_values: usize = folder.getattr(intern!(py, "max_values"))?.extract()?;
                let rows = self.rows(py, records, next_offset)?;
                let mut batch = Batch {
                    segments,
                    users: Vec::new(),
                    by_key: FxHashMap::default(),
                    pending: FxHashMap::default(),
                    kept,
                    new_values: [None, None],
                    folder: folder.clone(),
                    folds: Vec::new(),
                    all,
                    levels,
                    onboarding,
                    established,
                    max_day: None,
                };
                let oldest_valid = now_ms.div_euclid(MS_PER_DAY) - self.policy_lateness_days;
                let mut delegated: Vec<usize> = Vec::new();
                let mut delays: Vec<f64> = Vec::new();
                let mut accepted: usize = 0;
                let mut duplicates: usize = 0;
                let mut scanned = false;
                for row in &rows {
                    let index = row.index;
                    let Some(key) = &row.key else {
                        delegated.push(index); // unkeyed: re-keyed (or dead-lettered) by the Python engine
                        continue;
                    };
                    let key_bytes = key.downcast::<PyBytes>()?.as_bytes();
                    let user = self.user(&mut batch, key, key_bytes, get_state)?;
                    if batch.users[user].delegated {
                        delegated.push(index);
                        continue;
                    }
                    let handled = match &row.value {
                        Some(value) if value.as_bytes().len() <= self.max_message_bytes => {
                            match json::decode(kind, value.as_bytes()) {
                                Some(ev)
                                    if ev.user_id.as_bytes() == key_bytes
                                        && ev.ts_ms <= now_ms + self.max_future_ms
                                        && ev.ts_ms.div_euclid(MS_PER_DAY) >= oldest_valid =>
                                {
                                    let day = ev.ts_ms.div_euclid(MS_PER_DAY);
                                    if !scanned && batch.has_new_value(&ev) {
                                        // Only now, once per batch: whether the batch's new values fit.
                                        batch.new_values =
                                            self.new_values(kind, &rows, &batch.kept, max_values);
                                        scanned = true;
                                    }
                                    let outcome = if kind == json::CLICKS {
                                        self.click(&mut batch, user, &ev, day, partition, now_ms)?
                                            .then_some(true)
                                    } else {
                                        self.survey(&mut batch, user, &ev, day, partition, now_ms)?
                                    };
                                    match outcome {
                                        Some(true) => {
                                            delays.push((now_ms - ev.ts_ms) as f64 / 1000.0);
                                            accepted += 1;
                                            true
                                        }
                                        Some(false) => {
                                            duplicates += 1;
                                            true
                                        }
                                        None => false,
                                    }
                                }
                                _ => false,
                            }
                        }
                        _ => false,
                    };
                    if !handled {
                        batch.users[user].delegated = true;
                        delegated.push(index);
                    }
                }

                // Collapse the runs per segment into difference vectors by day (PartitionCounters' layout).
                let mut by_segment: FxHashMap<u32, SegmentDiffs> = FxHashMap::default();
                for ((segment, (counter, first, last, delta)), times) in batch.pending.drain() {
                    let (days, spans) = by_segment.entry(segment).or_default();
                    days.entry(first).or_insert([0; COUNTERS.len()])[counter as usize] += delta * times;
                    days.entry(last + 1).or_insert([0; COUNTERS.len()])[counter as usize] -= delta * times;
                    spans.insert((first, last));
                }
                for user in batch.users.iter().filter(|u| u.dirty) {
                    for (_, bits) in &user.state.segments {
                        if bits.to_u128().is_none() {
                            return Err(PyValueError::new_err("a state bitmap beyond 128 bits"));
                            // nothing written yet
                        }
                    }
                }
                failpoint("compute");
                Ok((batch, by_segment, delegated, delays, accepted, duplicates))
            },
            |panic| CorePanic::new_err(format!("the compiled core panicked before writing: {panic}")),
        );
        let (mut batch, by_segment, delegated, delays, accepted, duplicates) = computed?;
        // The write phase: from here on, Python objects change, so an error or a panic leaves the batch
        // partly applied (ApplyError: the Python engine must not take it again).
        let applied = guarded(
            || {
                let changed = PyList::empty(py);
                for (dim, value) in &batch.folds {
                    let dimension = SEGMENT_DIMENSIONS[*dim as usize];
                    batch
                        .folder
                        .call_method1(intern!(py, "fold"), (dimension, value.as_str()))?;
                }
                for i in 0..batch.users.len() {
                    if batch.users[i].dirty {
                        let object = store_state(py, &batch.users[i], state_class, &mut batch.segments)?;
                        // The changelog bytes, unless Python applies some of the user's records after the
                        // core (then the state changes again, and Python encodes it).
                        let encoded = if batch.users[i].delegated {
                            None
                        } else {
                            Some(PyBytes::new(
                                py,
                                &encode_state(&batch.users[i].state, &batch.segments),
                            ))
                        };
                        changed.append((batch.users[i].key.clone(), object, encoded))?;
                    }
                }
                failpoint("write");
                for (segment, (days, spans)) in by_segment {
                    let key = batch.segments.key(py, segment)?;
                    let target = counters.call_method1(intern!(py, "run_target"), (key,))?;
                    let diffs = target.get_item(0)?;
                    let diffs = diffs.downcast::<PyDict>()?;
                    let span_set = target.get_item(1)?;
                    let span_set = span_set.downcast::<pyo3::types::PySet>()?;
                    for (day, vector) in days {
                        let list = match diffs.get_item(day)? {
                            Some(list) => list.downcast_into::<PyList>()?,
                            None => {
                                let list = PyList::new(py, [0i64; COUNTERS.len()])?;
                                diffs.set_item(day, &list)?;
                                list
                            }
                        };
                        for (index, delta) in vector.iter().enumerate() {
                            if *delta != 0 {
                                let value: i64 = list.get_item(index)?.extract()?;
                                list.set_item(index, value + delta)?;
                            }
                        }
                    }
                    for span in spans {
                        span_set.add(span)?;
                    }
                }
                // The result too: failing to return it after the writes is as partial as failing in them.
                PyTuple::new(
                    py,
                    [
                        changed.into_any(),
                        accepted.into_pyobject(py)?.into_any(),
                        duplicates.into_pyobject(py)?.into_any(),
                        PyList::new(py, delays)?.into_any(),
                        batch.max_day.into_pyobject(py)?.into_any(),
                        PyList::new(py, delegated)?.into_any(),
                    ],
                )
            },
            |panic| ApplyError::new_err(format!("applying a batch: the compiled core panicked: {panic}")),
        );
        applied.map_err(|err| {
            if err.is_instance_of::<ApplyError>(py) {
                err
            } else {
                ApplyError::new_err(format!("applying a batch: {err}"))
            }
        })
    }
}

/// Tests only: make every later `Core.process` call panic in its `compute` phase (before it writes
/// anything) or its `write` phase (after it wrote a state), or nowhere (None). Process-wide.
#[pyfunction]
#[pyo3(signature = (phase))]
fn _set_failpoint(phase: Option<&str>) -> PyResult<()> {
    let at = match phase {
        None => 0,
        Some(name) => match FAILPOINTS.iter().position(|p| *p == name) {
            Some(index) => index as u8 + 1,
            None => return Err(PyValueError::new_err(format!("unknown failpoint {name:?}"))),
        },
    };
    FAILPOINT.store(at, Ordering::Relaxed);
    Ok(())
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    install_panic_hook();
    m.add_class::<Core>()?;
    m.add("ApplyError", m.py().get_type::<ApplyError>())?;
    m.add("CorePanic", m.py().get_type::<CorePanic>())?;
    m.add_function(wrap_pyfunction!(_set_failpoint, m)?)?;
    Ok(())
}
