//! The engagement and retention math of one user (streams/engagement.py, streams/retention.py and the
//! state updates of streams/userstate.py), on fixed-width bitmaps. Every function mirrors the Python
//! function of the same name; the Python code is the specification.

use crate::bits::{spread, U256};

/// Segment dimensions, as streams.segments.DIMENSIONS (their index is the state's dimension code).
pub const DIMENSIONS: [&str; 4] = ["all", "platform", "plan", "stage"];
pub const DIM_STAGE: u8 = 3;

/// (kpi, window) of every counter the core produces runs for, by index: streams.engagement.COUNTERS,
/// streams.retention.COUNTERS, streams.satisfaction.COUNTERS, streams.crossed.COUNTERS and ANY_LEVEL.
pub const COUNTERS: [(&str, &str); 56] = [
    ("active_users", "1d"),
    ("active_users", "7d"),
    ("active_users", "30d"),
    ("lifecycle_new", "1d"),
    ("lifecycle_returning", "1d"),
    ("lifecycle_resurrecting", "1d"),
    ("lifecycle_dormant", "1d"),
    ("churn_base", "7d"),
    ("churned", "7d"),
    ("churn_base", "30d"),
    ("churned", "30d"),
    ("matured_cohort", "1d"),
    ("retained", "1d"),
    ("cohort_present", "1d"),
    ("matured_cohort", "7d"),
    ("retained", "7d"),
    ("cohort_present", "7d"),
    ("matured_cohort", "30d"),
    ("retained", "30d"),
    ("cohort_present", "30d"),
    ("nps_responses", "7d"),
    ("nps_promoters", "7d"),
    ("nps_passives", "7d"),
    ("nps_detractors", "7d"),
    ("nps_shown", "7d"),
    ("nps_dismissed", "7d"),
    ("csat_responses", "7d"),
    ("csat_satisfied", "7d"),
    ("csat_score_sum", "7d"),
    ("csat_shown", "7d"),
    ("csat_dismissed", "7d"),
    ("nps_responses", "30d"),
    ("nps_promoters", "30d"),
    ("nps_passives", "30d"),
    ("nps_detractors", "30d"),
    ("nps_shown", "30d"),
    ("nps_dismissed", "30d"),
    ("csat_responses", "30d"),
    ("csat_satisfied", "30d"),
    ("csat_score_sum", "30d"),
    ("csat_shown", "30d"),
    ("csat_dismissed", "30d"),
    ("survey_events", "30d"),
    ("churn_base:promoter", "7d"),
    ("churn_base:passive", "7d"),
    ("churn_base:detractor", "7d"),
    ("churned:promoter", "7d"),
    ("churned:passive", "7d"),
    ("churned:detractor", "7d"),
    ("churn_base:promoter", "30d"),
    ("churn_base:passive", "30d"),
    ("churn_base:detractor", "30d"),
    ("churned:promoter", "30d"),
    ("churned:passive", "30d"),
    ("churned:detractor", "30d"),
    ("any_level_survey_events", "30d"),
];
/// First index of the satisfaction counters (11 per window, then survey_events 30d).
const SATISFACTION: u8 = 20;
/// First index of the NPS-group churn counters (streams.crossed.COUNTERS).
const CHURN_GROUPS: u8 = 43;
/// streams.crossed.ANY_LEVEL.
const ANY_LEVEL: u8 = 55;
/// streams.crossed.LOOKBACK.
pub const LOOKBACK: i64 = 28;
const ENGAGEMENT_COUNTERS: usize = 11;
const PRESENT_DAYS: u32 = 60;
const RETENTION_OFFSETS: [u32; 3] = [1, 7, 30];
/// streams.engagement.STATE_HORIZON and HORIZON.
pub const STATE_HORIZON: i64 = 89;
pub const HORIZON: i64 = 59;
pub const ONBOARDING_DAYS: i64 = 14;
/// The widest state bitmap the core takes (bits); wider states go to the Python engine.
pub const MAX_STATE_BITS: u32 = 128;

/// A counter run: (counter index, first day, last day, delta).
pub type Run = (u8, i64, i64, i64);

pub const NPS: u8 = 0;
pub const ANSWERED: u8 = 1;

/// A remembered survey (streams.userstate.SurveyFact) as far as the math reads it.
pub struct Fact<K> {
    /// The Python key of a fact read from the state (None: added by this batch).
    pub key: Option<K>,
    pub event_id: String,
    pub day: i64,
    /// json::NPS or json::CSAT; json::SHOWN, ANSWERED or DISMISSED.
    pub survey: u8,
    pub action: u8,
    /// -1: none.
    pub score: i64,
    pub ms: i64,
    /// (platform, plan, stage) segment ids of a fact added by this batch.
    pub segments: (u32, u32, u32),
    /// (platform, plan, stage) of a fact read from the state (its encoding needs them).
    pub names: Option<[String; 3]>,
}

impl<K> Fact<K> {
    fn is_answer(&self) -> bool {
        self.survey == NPS && self.action == ANSWERED && self.score >= 0
    }

    /// streams.crossed.fact_runs (unclipped).
    pub fn runs(&self) -> Vec<Run> {
        survey_runs(
            self.day,
            self.survey,
            self.action,
            if self.score < 0 { None } else { Some(self.score) },
        )
    }
}

/// streams.satisfaction.survey_runs.
pub fn survey_runs(day: i64, survey: u8, action: u8, score: Option<i64>) -> Vec<Run> {
    // Per window: indices 0..11 of satisfaction._PER_WINDOW.
    let nps = survey == NPS;
    let counters: Vec<(u8, i64)> = match (action, score) {
        (0, _) => vec![(if nps { 4 } else { 9 }, 1)],
        (2, _) => vec![(if nps { 5 } else { 10 }, 1)],
        (_, None) => vec![],
        (_, Some(score)) if nps => vec![
            (0, 1),
            (
                if score >= 9 {
                    1
                } else if score >= 7 {
                    2
                } else {
                    3
                },
                1,
            ),
        ],
        (_, Some(score)) => {
            let mut out = vec![(6, 1), (8, score)];
            if score >= 4 {
                out.push((7, 1));
            }
            out
        }
    };
    let mut runs = Vec::with_capacity(2 * counters.len() + 1);
    for (w, size) in [(0u8, 7i64), (1, 30)] {
        for &(i, delta) in &counters {
            runs.push((SATISFACTION + w * 11 + i, day, day + size - 1, delta));
        }
    }
    runs.push((SATISFACTION + 22, day, day + 29, 1));
    runs
}

/// streams.crossed.any_level_runs' run (the same in each level segment).
pub fn any_level_run(day: i64) -> Run {
    (ANY_LEVEL, day, day + 29, 1)
}

/// streams.crossed.level_of of the active days in [day - 27, day] (active_days_in): 0..3 for LEVELS.
pub fn survey_level(all_bits: U256, base: i64, day: i64) -> usize {
    let first = (day - LOOKBACK + 1 - base).max(0);
    let last = day - base;
    let days = if last < first {
        0
    } else {
        (all_bits.shr(first.min(256) as u32) & U256::mask((last - first + 1).min(256) as u32)).count_ones()
    };
    match days {
        0 => 0,
        1..=4 => 1,
        5..=14 => 2,
        _ => 3,
    }
}

/// (day, ms, score) of the answered NPS surveys, in arrival order (streams.crossed.answers_of).
pub fn answers_of<K>(facts: &[Fact<K>]) -> Vec<(i64, i64, i64)> {
    facts
        .iter()
        .filter(|f| f.is_answer())
        .map(|f| (f.day, f.ms, f.score))
        .collect()
}

/// streams.crossed.group_masks.
fn group_masks(answers: &[(i64, i64, i64)], base: i64, width: i64) -> [U256; 3] {
    let mut masks = [U256::ZERO; 3];
    let mut sorted: Vec<&(i64, i64, i64)> = answers.iter().collect();
    sorted.sort_by_key(|a| (a.0, a.1)); // stable, as Python's sorted()
    for &&(day, _, score) in &sorted {
        let (first, last) = (day + width - base, day + 2 * width - 1 - base);
        if last < 0 {
            continue;
        }
        let start = first.max(0);
        let span = U256::mask((last - start + 1) as u32).shl(start as u32);
        let index = if score >= 9 {
            0
        } else if score >= 7 {
            1
        } else {
            2
        };
        for mask in masks.iter_mut() {
            *mask &= !span;
        }
        masks[index] |= span;
    }
    masks
}

/// streams.crossed.churn_contribution (12 bitmaps; all zero without answers).
pub fn churn_contribution(active_all: U256, base: i64, answers: &[(i64, i64, i64)]) -> [U256; 12] {
    let mut out = [U256::ZERO; 12];
    if answers.is_empty() {
        return out;
    }
    for (w, width) in [(0usize, 7u32), (1, 30)] {
        let active_w = spread(active_all, width);
        let in_base = active_w.shl(width);
        let churned = in_base & !active_w;
        let masks = group_masks(answers, base, width as i64);
        for g in 0..3 {
            out[w * 6 + g] = in_base & masks[g];
            out[w * 6 + 3 + g] = churned & masks[g];
        }
    }
    out
}

/// streams.crossed.churn_runs.
pub fn churn_runs(before: &[U256; 12], before_base: i64, after: &[U256; 12], after_base: i64) -> Vec<Run> {
    let base = before_base.min(after_base);
    let was: Vec<U256> = before
        .iter()
        .map(|b| b.shl((before_base - base) as u32))
        .collect();
    let now: Vec<U256> = after.iter().map(|b| b.shl((after_base - base) as u32)).collect();
    let mut out = Vec::new();
    diff_runs(CHURN_GROUPS, &was, &now, base, &mut out);
    out
}

/// streams.userstate.UserState, with bitmaps of at most MAX_STATE_BITS bits.
pub struct State<K> {
    pub base: i64,
    /// (segment id, bitmap) in the Python dict's order (it decides the encoded bytes).
    pub segments: Vec<(u32, U256)>,
    pub explicit_new: U256,
    pub first_active: Option<i64>,
    pub first_active_unsigned: bool,
    pub first_seen: Option<i64>,
    pub last_seen: Option<i64>,
    pub partition: i64,
    pub surveys: Vec<Fact<K>>,
    /// event_ids of survey facts expired from the state, to delete from the Python dict.
    pub removed_surveys: Vec<K>,
}

impl<K> State<K> {
    pub fn new() -> State<K> {
        State {
            base: 0,
            segments: Vec::new(),
            explicit_new: U256::ZERO,
            first_active: None,
            first_active_unsigned: false,
            first_seen: None,
            last_seen: None,
            partition: -1,
            surveys: Vec::new(),
            removed_surveys: Vec::new(),
        }
    }

    pub fn bits_of(&self, segment: u32) -> U256 {
        for (s, bits) in &self.segments {
            if *s == segment {
                return *bits;
            }
        }
        U256::ZERO
    }

    pub fn note_seen(&mut self, day: i64) -> bool {
        let mut changed = false;
        if self.first_seen.is_none_or(|f| day < f) {
            self.first_seen = Some(day);
            changed = true;
        }
        if self.last_seen.is_none_or(|l| day > l) {
            self.last_seen = Some(day);
            changed = true;
        }
        changed
    }

    fn is_empty(&self) -> bool {
        self.segments.is_empty() && self.explicit_new.is_zero()
    }

    /// Whether `make_room(day)` and setting `day` keep every bitmap within MAX_STATE_BITS.
    pub fn fits(&self, day: i64) -> bool {
        if self.is_empty() {
            return true;
        }
        let new_base = self.base.min(day);
        let shift = self.base - new_base;
        let mut top = day - new_base;
        for bits in self.segments.iter().map(|(_, b)| *b).chain([self.explicit_new]) {
            let len = bits.bit_length() as i64;
            if len > 0 {
                top = top.max(len - 1 + shift);
            }
        }
        top < MAX_STATE_BITS as i64
    }

    fn make_room(&mut self, day: i64) -> u32 {
        if self.is_empty() {
            self.base = day;
            return 0;
        }
        let shift = self.base - day;
        if shift > 0 {
            let shift = shift as u32; // fits() bounds it
            for (_, bits) in self.segments.iter_mut() {
                *bits = bits.shl(shift);
            }
            self.explicit_new = self.explicit_new.shl(shift);
            self.base = day;
            return 0;
        }
        (-shift) as u32
    }

    /// UserState.expire (its result is not needed by the engine).
    pub fn expire(&mut self, cutoff: i64, survey_cutoff: i64) {
        if self.surveys.iter().any(|f| f.day < survey_cutoff) {
            let mut kept = Vec::with_capacity(self.surveys.len());
            for fact in self.surveys.drain(..) {
                if fact.day < survey_cutoff {
                    self.removed_surveys.extend(fact.key);
                } else {
                    kept.push(fact);
                }
            }
            self.surveys = kept;
        }
        let shift = cutoff - self.base;
        if shift <= 0 {
            return;
        }
        let shift = shift.min(256) as u32;
        self.segments.retain_mut(|(_, bits)| {
            *bits = bits.shr(shift);
            !bits.is_zero()
        });
        self.explicit_new = self.explicit_new.shr(shift);
        self.base = cutoff;
    }

    /// streams.engagement.new_days.
    fn new_days(&self) -> U256 {
        let mut days = self.explicit_new;
        if let (true, Some(first)) = (self.first_active_unsigned, self.first_active) {
            if first >= self.base {
                days |= U256::bit((first - self.base).min(256) as u32);
            }
        }
        days
    }

    /// streams.engagement.is_known.
    pub fn is_known(&self, day: i64, signup_day: Option<i64>, segments: &[u32]) -> bool {
        let off = day - self.base;
        let first = match self.first_active {
            Some(first) if day >= first && off >= 0 => first,
            _ => return false,
        };
        let off = off.min(256) as u32;
        match signup_day {
            None => {
                if day == first && !self.first_active_unsigned {
                    return false;
                }
            }
            Some(signup) => {
                if signup == day && !self.explicit_new.test(off) {
                    return false;
                }
            }
        }
        segments.iter().all(|s| self.bits_of(*s).test(off))
    }

    fn note_new_day_facts(&mut self, day: i64, signup_day: Option<i64>, bit: U256) {
        match self.first_active {
            Some(first) if day >= first => {
                if day == first && signup_day.is_none() {
                    self.first_active_unsigned = true;
                }
            }
            _ => {
                self.first_active = Some(day);
                self.first_active_unsigned = signup_day.is_none();
            }
        }
        if signup_day == Some(day) {
            self.explicit_new |= bit;
        }
        self.note_seen(day);
    }

    /// streams.engagement._record_change: apply an active click that `is_known` found new; call `emit`
    /// with each (segment, run) it causes. `retention(segment)` tells whether a segment has retention.
    pub fn record_change(
        &mut self,
        day: i64,
        signup_day: Option<i64>,
        segments: &[u32],
        retention: impl Fn(u32) -> bool,
        mut emit: impl FnMut(u32, Run),
    ) {
        let off = self.make_room(day);
        let bit = U256::bit(off);
        let new_before = self.new_days();
        self.note_new_day_facts(day, signup_day, bit);
        let new_after = self.new_days();
        let new_changed = new_before ^ new_after;

        let mut before: [(u32, U256); 4] = [(u32::MAX, U256::ZERO); 4];
        let mut n_before = 0;
        for &segment in segments {
            match self.segments.iter_mut().find(|(s, _)| *s == segment) {
                Some((_, bits)) => {
                    if !(*bits & bit).is_zero() {
                        continue;
                    }
                    before[n_before] = (segment, *bits);
                    *bits |= bit;
                }
                None => {
                    before[n_before] = (segment, U256::ZERO);
                    self.segments.push((segment, bit));
                }
            }
            n_before += 1;
        }

        let mut done: Vec<((U256, U256, bool), Vec<Run>)> = Vec::new();
        for &(segment, bits) in &self.segments {
            let old = before[..n_before]
                .iter()
                .find(|(s, _)| *s == segment)
                .map_or(bits, |(_, b)| *b);
            if old == bits && (new_changed & bits).is_zero() {
                continue;
            }
            let with_retention = retention(segment);
            let key = (old, bits, with_retention);
            let index = match done.iter().position(|(k, _)| *k == key) {
                Some(index) => index,
                None => {
                    let runs = changes(self.base, old, bits, off, new_before, new_after, with_retention);
                    done.push((key, runs));
                    done.len() - 1
                }
            };
            for run in &done[index].1 {
                emit(segment, *run);
            }
        }
    }
}

impl<K> State<K> {
    /// What an active click changes of the user's surveys (the rest of streams.crossed.record_click),
    /// after `record_change`: `old_bits` and `old_base` were dimension all's bitmap and the base before.
    pub fn click_surveys(
        &self,
        all: u32,
        levels: &[u32; 4],
        day: i64,
        old_bits: U256,
        old_base: i64,
        emit: &mut impl FnMut(u32, Run),
    ) {
        if self.surveys.is_empty() {
            return;
        }
        let (new_bits, new_base) = (self.bits_of(all), self.base);
        let base = old_base.min(new_base);
        if new_bits.shl((new_base - base) as u32) == old_bits.shl((old_base - base) as u32) {
            return; // the day was active in dimension all already
        }
        for fact in &self.surveys {
            if !(day <= fact.day && fact.day < day + LOOKBACK) {
                continue;
            }
            let old = survey_level(old_bits, old_base, fact.day);
            let new = survey_level(new_bits, new_base, fact.day);
            if old == new {
                continue;
            }
            for (counter, first, last, delta) in fact.runs() {
                emit(levels[old], (counter, first, last, -delta));
                emit(levels[new], (counter, first, last, delta));
            }
        }
        let answers = answers_of(&self.surveys);
        if !answers.is_empty() {
            let before = churn_contribution(old_bits, old_base, &answers);
            let after = churn_contribution(new_bits, new_base, &answers);
            for run in churn_runs(&before, old_base, &after, new_base) {
                emit(all, run);
            }
        }
    }

    /// streams.crossed.record_survey: remember a new fact, emit the runs it adds. `segments` are the
    /// fact's own (all, platform, plan, stage).
    pub fn record_survey(
        &mut self,
        fact: Fact<K>,
        all: u32,
        levels: &[u32; 4],
        segments: [u32; 4],
        emit: &mut impl FnMut(u32, Run),
    ) {
        let is_answer = fact.is_answer();
        let runs = fact.runs();
        for segment in segments {
            for run in &runs {
                emit(segment, *run);
            }
        }
        let (all_bits, base) = (self.bits_of(all), self.base);
        for run in &runs {
            emit(levels[survey_level(all_bits, base, fact.day)], *run);
        }
        for level in levels {
            emit(*level, any_level_run(fact.day));
        }
        if is_answer && !all_bits.is_zero() {
            let answers = answers_of(&self.surveys);
            let mut with = answers.clone();
            with.push((fact.day, fact.ms, fact.score));
            let before = churn_contribution(all_bits, base, &answers);
            let after = churn_contribution(all_bits, base, &with);
            for run in churn_runs(&before, base, &after, base) {
                emit(all, run);
            }
        }
        self.surveys.push(fact);
    }
}

/// streams.engagement._contribution (11 bitmaps) followed, with `present`, by
/// streams.retention.contribution (9 bitmaps).
fn contribution(a: U256, a7: U256, a30: U256, n: U256, present: Option<U256>, out: &mut Vec<U256>) {
    let prev = a.shl(1);
    let not_new = !n;
    let base7 = a7.shl(7);
    let base30 = a30.shl(30);
    out.extend_from_slice(&[
        a,
        a7,
        a30,
        a & n,
        a & prev & not_new,
        a & !prev & not_new,
        prev & !a,
        base7,
        base7 & !a7,
        base30,
        base30 & !a30,
    ]);
    if let Some(present) = present {
        let cohort = a & n;
        for k in RETENTION_OFFSETS {
            let matured = cohort.shl(k);
            out.extend_from_slice(&[matured, matured & a, present.shl(k)]);
        }
    }
}

/// streams.engagement._changes.
fn changes(base: i64, old: U256, new: U256, off: u32, nb: U256, na: U256, with_retention: bool) -> Vec<Run> {
    let old7 = spread(old, 7);
    let old30 = spread(old, 30);
    let (new7, new30) = if old == new {
        (old7, old30)
    } else {
        (old7 | U256::mask(7).shl(off), old30 | U256::mask(30).shl(off))
    };
    let (old_present, new_present) = if with_retention {
        let p = spread(old, PRESENT_DAYS);
        (
            Some(p),
            Some(if old == new {
                p
            } else {
                p | U256::mask(PRESENT_DAYS).shl(off)
            }),
        )
    } else {
        (None, None)
    };
    let mut before = Vec::with_capacity(COUNTERS.len());
    let mut after = Vec::with_capacity(COUNTERS.len());
    contribution(old, old7, old30, nb, old_present, &mut before);
    contribution(new, new7, new30, na, new_present, &mut after);
    // Engagement counters, then (with retention) three per retention offset: the numbering diff_runs uses.
    debug_assert!(
        before.len() == after.len()
            && (before.len() == ENGAGEMENT_COUNTERS
                || before.len() == ENGAGEMENT_COUNTERS + 3 * RETENTION_OFFSETS.len())
    );
    let mut out = Vec::new();
    diff_runs(0, &before, &after, base, &mut out);
    out
}

/// streams.engagement.diff_runs: runs turning each `before` bitmap into its `after` bitmap; counters are
/// numbered from `first_counter`.
pub fn diff_runs(first_counter: u8, before: &[U256], after: &[U256], base: i64, out: &mut Vec<Run>) {
    for (i, (&was, &now)) in before.iter().zip(after).enumerate() {
        if was == now {
            continue;
        }
        let counter = first_counter + i as u8;
        for (mut changed, delta) in [(now & !was, 1i64), (was & !now, -1i64)] {
            while !changed.is_zero() {
                let start = changed.trailing_zeros();
                let rest = changed.shr(start);
                let length = (!rest).trailing_zeros();
                out.push((
                    counter,
                    base + start as i64,
                    base + (start + length) as i64 - 1,
                    delta,
                ));
                changed = changed ^ U256::mask(length).shl(start);
            }
        }
    }
}
