//! Consumer groups on a shard: the coordinator for the groups whose `__consumer_offsets`
//! partitions this shard owns. It runs the pure state machine in `state`, keeps committed
//! offsets in memory, and makes every change durable in the offsets log (`store`) before
//! acknowledging it.

pub mod state;
pub mod store;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;
use kafka_protocol::error::ResponseError;

use crate::shard::messages::Reply as ReplyTo;
use state::{Effect, Group, GroupState, JoinArgs, JoinResult, Limits, Member, Reply, Saved, SyncResult};
use store::{Entry, OffsetStore, SavedMember};

/// How often the timers (sessions, join deadlines) of groups that have any are checked.
const TICK: Duration = Duration::from_millis(10);
/// How often groups that stayed empty are checked against the offsets retention.
const EXPIRY_CHECK: Duration = Duration::from_secs(1);
/// Longest commit metadata string kept (Kafka's `offset.metadata.max.bytes`).
const METADATA_BYTES_MAX: usize = 4096;

/// The offsets partition a group belongs to: a stable hash of its id.
pub fn offsets_partition(group_id: &str, partitions: usize) -> usize {
    crate::protocol::batch::crc32c(group_id.as_bytes()) as usize % partitions.max(1)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
}

pub struct CommitItem {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group_id: String,
    /// Dead for a group that does not exist.
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// (topic, partition, committed offset if any)
pub type FetchedOffsets = Vec<(String, i32, Option<Committed>)>;

/// A group request forwarded by the router to the shard that coordinates the group.
pub enum GroupCall {
    Join {
        group: String,
        args: JoinArgs,
        reply: ReplyTo<JoinResult>,
    },
    Sync {
        group: String,
        member_id: String,
        instance: Option<String>,
        generation_id: i32,
        protocol_type: Option<String>,
        protocol_name: Option<String>,
        assignments: Vec<(String, Bytes)>,
        reply: ReplyTo<SyncResult>,
    },
    Heartbeat {
        group: String,
        member_id: String,
        instance: Option<String>,
        generation_id: i32,
        reply: ReplyTo<i16>,
    },
    /// Answers a top-level error or one code per member.
    Leave {
        group: String,
        members: Vec<(String, Option<String>)>,
        reply: ReplyTo<Result<Vec<i16>, i16>>,
    },
    /// One code per item.
    Commit {
        group: String,
        member_id: String,
        instance: Option<String>,
        generation_id: i32,
        items: Vec<CommitItem>,
        reply: ReplyTo<Vec<i16>>,
    },
    /// `None` asks for every committed partition of the group.
    Fetch {
        group: String,
        partitions: Option<Vec<(String, i32)>>,
        reply: ReplyTo<FetchedOffsets>,
    },
    Describe {
        groups: Vec<String>,
        reply: ReplyTo<Vec<GroupDescription>>,
    },
    /// (group id, protocol type, state) of every group here.
    List {
        reply: ReplyTo<Vec<(String, String, &'static str)>>,
    },
    Delete {
        groups: Vec<String>,
        reply: ReplyTo<Vec<i16>>,
    },
    /// A top-level error or one code per partition.
    OffsetDelete {
        group: String,
        partitions: Vec<(String, i32)>,
        reply: ReplyTo<Result<Vec<i16>, i16>>,
    },
    /// A topic was deleted: its committed offsets go too.
    DropTopic {
        topic: String,
    },
}

struct GroupEntry {
    group: Group,
    joins: HashMap<String, oneshot::Sender<JoinResult>>,
    syncs: HashMap<String, oneshot::Sender<SyncResult>>,
}

pub struct Coordinator {
    groups: RefCell<HashMap<String, GroupEntry>>,
    /// The groups whose timers can come due (`Group::needs_ticks`): only these are ticked, so
    /// that groups kept only for their committed offsets cost nothing between expiry checks.
    /// A group leaves the set at the first tick that finds it idle.
    ticking: RefCell<HashSet<String>>,
    /// Wakes the ticker, asleep while no group is ticking, when one starts to.
    ticker_wake: RefCell<Option<oneshot::Sender<()>>>,
    offsets: RefCell<HashMap<String, BTreeMap<(String, i32), Committed>>>,
    /// This shard's offsets partitions, by partition index.
    stores: HashMap<usize, OffsetStore>,
    partitions_total: usize,
    limits: Limits,
    retention_ms: u64,
    epoch: Instant,
}

impl Coordinator {
    /// See `PartitionLog::set_zero_ahead`.
    pub fn set_zero_ahead(&self, bytes: u64) {
        for store in self.stores.values() {
            store.set_zero_ahead(bytes);
        }
    }

    /// Opens this shard's offsets partitions and replays them.
    pub async fn open(
        data_dir: &Path,
        owned: &[usize],
        partitions_total: usize,
        limits: Limits,
        retention_ms: u64,
        segment_bytes: u64,
    ) -> Result<Rc<Coordinator>, String> {
        let mut stores = HashMap::new();
        let mut entries = Vec::new();
        for &index in owned {
            let (store, found) = OffsetStore::open(data_dir, index, segment_bytes).await?;
            stores.insert(index, store);
            entries.extend(found);
        }
        let c = Rc::new(Coordinator {
            groups: RefCell::new(HashMap::new()),
            ticking: RefCell::new(HashSet::new()),
            ticker_wake: RefCell::new(None),
            offsets: RefCell::new(HashMap::new()),
            stores,
            partitions_total,
            limits,
            retention_ms,
            epoch: Instant::now(),
        });
        for e in entries {
            c.replay(e);
        }
        let restored: Vec<String> = c
            .groups
            .borrow()
            .iter()
            .filter(|(_, e)| e.group.needs_ticks())
            .map(|(id, _)| id.clone())
            .collect();
        restored.iter().for_each(|id| c.watch(id));
        glommio::spawn_local(ticker(Rc::downgrade(&c))).detach();
        glommio::spawn_local(compactor(Rc::downgrade(&c))).detach();
        Ok(c)
    }

    /// Ticks `group` from now on (until a tick finds it idle), waking the ticker if it slept.
    fn watch(&self, group: &str) {
        let mut ticking = self.ticking.borrow_mut();
        if !ticking.contains(group) {
            ticking.insert(group.to_string());
            if let Some(wake) = self.ticker_wake.borrow_mut().take() {
                let _ = wake.send(());
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn replay(&self, e: Entry) {
        let now = self.now_ms();
        match e {
            Entry::Offset {
                group,
                topic,
                partition,
                offset,
                leader_epoch,
                metadata,
                commit_timestamp_ms,
            } => {
                self.offsets.borrow_mut().entry(group.clone()).or_default().insert(
                    (topic, partition),
                    Committed { offset, leader_epoch, metadata, commit_timestamp_ms },
                );
                self.groups.borrow_mut().entry(group.clone()).or_insert_with(|| self.new_entry(&group, now));
            }
            Entry::OffsetDelete { group, topic, partition } => {
                if let Some(o) = self.offsets.borrow_mut().get_mut(&group) {
                    o.remove(&(topic, partition));
                }
            }
            Entry::Group { group, protocol_type, protocol, generation_id, leader, members } => {
                let members = members.into_iter().map(member_from_saved).collect();
                let saved = Saved { protocol_type, protocol, generation_id, leader, members };
                let g = Group::restore(&group, self.limits, now, saved);
                self.groups
                    .borrow_mut()
                    .insert(group, GroupEntry { group: g, joins: HashMap::new(), syncs: HashMap::new() });
            }
            Entry::GroupDelete { group } => {
                self.groups.borrow_mut().remove(&group);
                self.offsets.borrow_mut().remove(&group);
            }
        }
    }

    fn new_entry(&self, id: &str, now: u64) -> GroupEntry {
        GroupEntry { group: Group::new(id, self.limits, now), joins: HashMap::new(), syncs: HashMap::new() }
    }

    fn store_for(&self, group: &str) -> Option<&OffsetStore> {
        self.stores.get(&offsets_partition(group, self.partitions_total))
    }

    /// Appends entries to the group's offsets log now. Every change to the maps is made right
    /// after its entries are queued, with no await between, so the log holds changes in the
    /// order the maps saw them: a snapshot taken from the maps supersedes everything before it.
    fn queue(&self, group: &str, entries: &[Entry]) -> Result<store::Synced, String> {
        match self.store_for(group) {
            Some(store) => store.queue(entries),
            None => Err(format!("group {group} is not coordinated by this shard")),
        }
    }

    /// Applies a state machine's effects: answers waiting requests, persists the group.
    fn apply(&self, entry: &mut GroupEntry, effects: Vec<Effect>) -> Option<Entry> {
        let mut persist = None;
        for effect in effects {
            match effect {
                Effect::Join(id, result) => {
                    if let Some(tx) = entry.joins.remove(&id) {
                        let _ = tx.send(result);
                    }
                }
                Effect::Sync(id, result) => {
                    if let Some(tx) = entry.syncs.remove(&id) {
                        let _ = tx.send(result);
                    }
                }
                Effect::Persist => persist = Some(saved_entry(&entry.group)),
            }
        }
        persist
    }

    fn persist_later(self: &Rc<Self>, group: String, entry: Option<Entry>) {
        if let Some(entry) = entry {
            let queued = self.queue(&group, &[entry]);
            glommio::spawn_local(async move {
                let synced = match queued {
                    Ok(synced) => synced.wait().await,
                    Err(e) => Err(e),
                };
                if let Err(e) = synced {
                    eprintln!("pinion: saving group {group}: {e}");
                }
            })
            .detach();
        }
    }

    /// The whole state of the groups in offsets partition `index`, as entries.
    fn snapshot(&self, index: usize) -> Vec<Entry> {
        let mine = |g: &str| offsets_partition(g, self.partitions_total) == index;
        let mut entries = Vec::new();
        for (group, committed) in self.offsets.borrow().iter().filter(|(g, _)| mine(g)) {
            for ((topic, partition), c) in committed {
                entries.push(Entry::Offset {
                    group: group.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                    offset: c.offset,
                    leader_epoch: c.leader_epoch,
                    metadata: c.metadata.clone(),
                    commit_timestamp_ms: c.commit_timestamp_ms,
                });
            }
        }
        for (_, entry) in self.groups.borrow().iter().filter(|(g, _)| mine(g)) {
            if !entry.group.is_empty() {
                entries.push(saved_entry(&entry.group));
            }
        }
        entries
    }

    /// Keeps the offsets logs short: once a log has sealed a segment, the live state is written
    /// after it as a snapshot, and when that is synced the sealed segments go.
    async fn compact(&self) {
        for (&index, store) in &self.stores {
            if store.sealed_segments() == 0 {
                continue;
            }
            let entries = self.snapshot(index);
            let synced = match store.queue(&entries) {
                Ok(synced) => synced.wait().await,
                Err(e) => Err(e),
            };
            let dropped = match synced {
                Ok(()) => store.drop_sealed_segments().await,
                Err(e) => Err(e),
            };
            match dropped {
                Ok(n) => eprintln!(
                    "pinion: {}-{index}: compacted to {} entries, {n} segments dropped",
                    store::OFFSETS_TOPIC,
                    entries.len()
                ),
                Err(e) => eprintln!("pinion: compacting {}-{index}: {e}", store::OFFSETS_TOPIC),
            }
        }
    }

    pub async fn handle(self: &Rc<Self>, call: GroupCall) {
        let now = self.now_ms();
        if let GroupCall::Join { group, .. }
        | GroupCall::Sync { group, .. }
        | GroupCall::Heartbeat { group, .. }
        | GroupCall::Leave { group, .. } = &call
        {
            self.watch(group);
        }
        match call {
            GroupCall::Join { group, args, reply } => {
                let rx = {
                    let mut groups = self.groups.borrow_mut();
                    let entry = groups.entry(group.clone()).or_insert_with(|| self.new_entry(&group, now));
                    let (member_id, answer, effects) = entry.group.join(args, now);
                    let (tx, rx) = oneshot::channel();
                    match answer {
                        Reply::Now(r) => {
                            let _ = tx.send(r);
                        }
                        Reply::Later => {
                            if let Some(old) = entry.joins.insert(member_id.clone(), tx) {
                                let _ =
                                    old.send(JoinResult::error(ResponseError::UnknownMemberId, &member_id));
                            }
                        }
                    }
                    let persist = self.apply(entry, effects);
                    self.persist_later(group, persist);
                    rx
                };
                let result =
                    rx.await.unwrap_or_else(|_| JoinResult::error(ResponseError::UnknownServerError, ""));
                reply.send(result);
            }
            GroupCall::Sync {
                group,
                member_id,
                instance,
                generation_id,
                protocol_type,
                protocol_name,
                assignments,
                reply,
            } => {
                let rx = {
                    let mut groups = self.groups.borrow_mut();
                    let (tx, rx) = oneshot::channel();
                    match groups.get_mut(&group) {
                        None => {
                            let _ = tx.send(SyncResult::error(ResponseError::UnknownMemberId));
                        }
                        Some(entry) => {
                            let protocol = (protocol_type.as_deref(), protocol_name.as_deref());
                            let (answer, effects) = entry.group.sync(
                                &member_id,
                                &instance,
                                generation_id,
                                protocol,
                                assignments,
                                now,
                            );
                            match answer {
                                Reply::Now(r) => {
                                    let _ = tx.send(r);
                                }
                                Reply::Later => {
                                    entry.syncs.insert(member_id.clone(), tx);
                                }
                            }
                            let persist = self.apply(entry, effects);
                            self.persist_later(group, persist);
                        }
                    }
                    rx
                };
                let result =
                    rx.await.unwrap_or_else(|_| SyncResult::error(ResponseError::UnknownServerError));
                reply.send(result);
            }
            GroupCall::Heartbeat { group, member_id, instance, generation_id, reply } => {
                let code = match self.groups.borrow_mut().get_mut(&group) {
                    None => ResponseError::UnknownMemberId.code(),
                    Some(entry) => entry.group.heartbeat(&member_id, &instance, generation_id, now),
                };
                reply.send(code);
            }
            GroupCall::Leave { group, members, reply } => {
                let outcome = {
                    let mut groups = self.groups.borrow_mut();
                    match groups.get_mut(&group) {
                        None => Err(ResponseError::UnknownMemberId.code()),
                        Some(entry) => {
                            let (codes, effects) = entry.group.leave(&members, now);
                            let persist = self.apply(entry, effects);
                            self.persist_later(group, persist);
                            Ok(codes)
                        }
                    }
                };
                reply.send(outcome);
            }
            GroupCall::Commit { group, member_id, instance, generation_id, items, reply } => {
                let codes = self.commit(&group, &member_id, &instance, generation_id, items, now).await;
                reply.send(codes);
            }
            GroupCall::Fetch { group, partitions, reply } => {
                let offsets = self.offsets.borrow();
                let committed = offsets.get(&group);
                let out = match partitions {
                    Some(list) => list
                        .into_iter()
                        .map(|(t, p)| {
                            let c = committed.and_then(|o| o.get(&(t.clone(), p))).cloned();
                            (t, p, c)
                        })
                        .collect(),
                    None => committed
                        .map(|o| o.iter().map(|((t, p), c)| (t.clone(), *p, Some(c.clone()))).collect())
                        .unwrap_or_default(),
                };
                reply.send(out);
            }
            GroupCall::Describe { groups, reply } => {
                let all = self.groups.borrow();
                let out =
                    groups.into_iter().map(|id| describe(&id, all.get(&id).map(|e| &e.group))).collect();
                reply.send(out);
            }
            GroupCall::List { reply } => {
                let out = self
                    .groups
                    .borrow()
                    .values()
                    .map(|e| {
                        let g = &e.group;
                        (g.id.clone(), g.protocol_type.clone().unwrap_or_default(), g.state.name())
                    })
                    .collect();
                reply.send(out);
            }
            GroupCall::Delete { groups, reply } => {
                let mut codes = Vec::with_capacity(groups.len());
                for id in groups {
                    codes.push(self.delete_group(&id).await);
                }
                reply.send(codes);
            }
            GroupCall::OffsetDelete { group, partitions, reply } => {
                let outcome = self.delete_offsets(&group, partitions).await;
                reply.send(outcome);
            }
            GroupCall::DropTopic { topic } => {
                // Tombstones first, so the offsets do not come back at the next start.
                let dropped: Vec<(String, Vec<Entry>)> = self
                    .offsets
                    .borrow()
                    .iter()
                    .map(|(group, committed)| {
                        let entries = committed
                            .keys()
                            .filter(|(t, _)| *t == topic)
                            .map(|(t, p)| Entry::OffsetDelete {
                                group: group.clone(),
                                topic: t.clone(),
                                partition: *p,
                            })
                            .collect::<Vec<_>>();
                        (group.clone(), entries)
                    })
                    .filter(|(_, entries)| !entries.is_empty())
                    .collect();
                let queued: Vec<(String, Result<store::Synced, String>)> = dropped
                    .into_iter()
                    .map(|(group, entries)| (group.clone(), self.queue(&group, &entries)))
                    .collect();
                for committed in self.offsets.borrow_mut().values_mut() {
                    committed.retain(|(t, _), _| *t != topic);
                }
                for (group, queued) in queued {
                    let synced = match queued {
                        Ok(synced) => synced.wait().await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = synced {
                        eprintln!("pinion: dropping offsets of deleted topic {topic} for group {group}: {e}");
                    }
                }
            }
        }
    }

    async fn commit(
        &self,
        group: &str,
        member_id: &str,
        instance: &Option<String>,
        generation_id: i32,
        items: Vec<CommitItem>,
        now: u64,
    ) -> Vec<i16> {
        let check = {
            let mut groups = self.groups.borrow_mut();
            let entry = groups.entry(group.to_string()).or_insert_with(|| self.new_entry(group, now));
            entry.group.check_commit(member_id, instance, generation_id)
        };
        if let Err(e) = check {
            return vec![e.code(); items.len()];
        }
        let timestamp = store::now_ms();
        let mut codes = vec![0; items.len()];
        let mut entries = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if item.metadata.as_ref().is_some_and(|m| m.len() > METADATA_BYTES_MAX) {
                codes[i] = ResponseError::OffsetMetadataTooLarge.code();
                continue;
            }
            entries.push(Entry::Offset {
                group: group.to_string(),
                topic: item.topic.clone(),
                partition: item.partition,
                offset: item.offset,
                leader_epoch: item.leader_epoch,
                metadata: item.metadata.clone(),
                commit_timestamp_ms: timestamp,
            });
        }
        let queued = match self.queue(group, &entries) {
            Ok(queued) => queued,
            Err(e) => {
                eprintln!("pinion: committing offsets of group {group}: {e}");
                return vec![ResponseError::CoordinatorNotAvailable.code(); codes.len()];
            }
        };
        {
            let mut offsets = self.offsets.borrow_mut();
            let committed = offsets.entry(group.to_string()).or_default();
            for (i, item) in items.into_iter().enumerate() {
                if codes[i] == 0 {
                    committed.insert(
                        (item.topic, item.partition),
                        Committed {
                            offset: item.offset,
                            leader_epoch: item.leader_epoch,
                            metadata: item.metadata,
                            commit_timestamp_ms: timestamp,
                        },
                    );
                }
            }
        }
        // Acknowledged only once synced; OffsetFetch may see the offset a moment earlier.
        if let Err(e) = queued.wait().await {
            eprintln!("pinion: committing offsets of group {group}: {e}");
            return vec![ResponseError::CoordinatorNotAvailable.code(); codes.len()];
        }
        codes
    }

    async fn delete_group(&self, id: &str) -> i16 {
        let exists = {
            let groups = self.groups.borrow();
            match groups.get(id) {
                None => return ResponseError::GroupIdNotFound.code(),
                Some(e) if !e.group.is_empty() => return ResponseError::NonEmptyGroup.code(),
                Some(_) => true,
            }
        };
        if !exists {
            return 0;
        }
        let queued = self.queue(id, &[Entry::GroupDelete { group: id.to_string() }]);
        self.groups.borrow_mut().remove(id);
        self.offsets.borrow_mut().remove(id);
        let synced = match queued {
            Ok(synced) => synced.wait().await,
            Err(e) => Err(e),
        };
        match synced {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("pinion: deleting group {id}: {e}");
                ResponseError::CoordinatorNotAvailable.code()
            }
        }
    }

    async fn delete_offsets(&self, group: &str, partitions: Vec<(String, i32)>) -> Result<Vec<i16>, i16> {
        let subscribed = match self.groups.borrow().get(group) {
            None => return Err(ResponseError::GroupIdNotFound.code()),
            Some(e) => e.group.subscribed_topics(),
        };
        let mut codes = Vec::with_capacity(partitions.len());
        let mut entries = Vec::new();
        for (topic, partition) in &partitions {
            if subscribed.contains(topic) {
                codes.push(ResponseError::GroupSubscribedToTopic.code());
            } else {
                codes.push(0);
                entries.push(Entry::OffsetDelete {
                    group: group.to_string(),
                    topic: topic.clone(),
                    partition: *partition,
                });
            }
        }
        let queued = match self.queue(group, &entries) {
            Ok(queued) => queued,
            Err(e) => {
                eprintln!("pinion: deleting offsets of group {group}: {e}");
                return Err(ResponseError::CoordinatorNotAvailable.code());
            }
        };
        if let Some(o) = self.offsets.borrow_mut().get_mut(group) {
            for ((topic, partition), code) in partitions.into_iter().zip(&codes) {
                if *code == 0 {
                    o.remove(&(topic, partition));
                }
            }
        }
        if let Err(e) = queued.wait().await {
            eprintln!("pinion: deleting offsets of group {group}: {e}");
            return Err(ResponseError::CoordinatorNotAvailable.code());
        }
        Ok(codes)
    }

    /// Runs the timers of the groups that have any.
    fn tick(self: &Rc<Self>) {
        let now = self.now_ms();
        let mut groups = self.groups.borrow_mut();
        self.ticking.borrow_mut().retain(|id| {
            let Some(entry) = groups.get_mut(id) else { return false };
            let effects = entry.group.tick(now);
            if !effects.is_empty() {
                let persist = self.apply(entry, effects);
                self.persist_later(id.clone(), persist);
            }
            entry.group.needs_ticks()
        });
    }

    /// Deletes the groups that stayed empty past the offsets retention.
    fn expire(self: &Rc<Self>) {
        let now = self.now_ms();
        let expired: Vec<String> = self
            .groups
            .borrow()
            .iter()
            .filter(|(_, e)| {
                e.group.state == GroupState::Empty
                    && e.group.empty_since_ms.is_some_and(|t| now.saturating_sub(t) > self.retention_ms)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            let me = self.clone();
            glommio::spawn_local(async move {
                me.delete_group(&id).await;
            })
            .detach();
        }
    }

    pub async fn close(&self) {
        for store in self.stores.values() {
            store.close().await;
        }
    }
}

/// How often the offsets logs are checked for a sealed segment to compact away.
const COMPACT_CHECK: Duration = Duration::from_secs(5);

async fn compactor(c: std::rc::Weak<Coordinator>) {
    loop {
        glommio::timer::sleep(COMPACT_CHECK).await;
        match c.upgrade() {
            Some(c) => c.compact().await,
            None => return,
        }
    }
}

/// Ticks the ticking groups every `TICK`, and sleeps while there are none; checks for
/// expired groups every `EXPIRY_CHECK`.
async fn ticker(c: std::rc::Weak<Coordinator>) {
    let mut expiry_checked = Instant::now();
    loop {
        let idle = {
            let Some(c) = c.upgrade() else { return };
            let idle = c.ticking.borrow().is_empty();
            if idle {
                let (wake, woken) = oneshot::channel();
                *c.ticker_wake.borrow_mut() = Some(wake);
                Some(woken)
            } else {
                None
            }
        };
        match idle {
            Some(woken) => {
                let until = EXPIRY_CHECK.saturating_sub(expiry_checked.elapsed());
                let _ = futures::future::select(woken, Box::pin(glommio::timer::sleep(until))).await;
            }
            None => glommio::timer::sleep(TICK).await,
        }
        let Some(c) = c.upgrade() else { return };
        c.tick();
        if expiry_checked.elapsed() >= EXPIRY_CHECK {
            expiry_checked = Instant::now();
            c.expire();
        }
    }
}

fn describe(id: &str, group: Option<&Group>) -> GroupDescription {
    let Some(g) = group else {
        return GroupDescription {
            group_id: id.to_string(),
            state: GroupState::Dead.name(),
            protocol_type: String::new(),
            protocol: String::new(),
            members: Vec::new(),
        };
    };
    let protocol = g.protocol.clone().unwrap_or_default();
    GroupDescription {
        group_id: id.to_string(),
        state: g.state.name(),
        protocol_type: g.protocol_type.clone().unwrap_or_default(),
        protocol: protocol.clone(),
        members: g
            .members
            .values()
            .map(|m| MemberDescription {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: m.metadata_for(&protocol),
                assignment: m.assignment.clone(),
            })
            .collect(),
    }
}

fn saved_entry(g: &Group) -> Entry {
    Entry::Group {
        group: g.id.clone(),
        protocol_type: g.protocol_type.clone(),
        protocol: g.protocol.clone(),
        generation_id: g.generation_id,
        leader: g.leader.clone(),
        members: g
            .members
            .values()
            .map(|m| SavedMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                protocols: m.protocols.iter().map(|(n, b)| (n.clone(), store::to_hex(b))).collect(),
                assignment: store::to_hex(&m.assignment),
            })
            .collect(),
    }
}

fn member_from_saved(m: SavedMember) -> Member {
    Member {
        member_id: m.member_id,
        group_instance_id: m.group_instance_id,
        client_id: m.client_id,
        client_host: m.client_host,
        rebalance_timeout_ms: m.rebalance_timeout_ms,
        session_timeout_ms: m.session_timeout_ms,
        protocols: m.protocols.into_iter().map(|(n, h)| (n, store::from_hex(&h))).collect(),
        assignment: store::from_hex(&m.assignment),
        joining: false,
        syncing: false,
        last_heartbeat_ms: 0,
    }
}
