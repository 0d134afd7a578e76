//! The classic consumer-group state machine, as Kafka's group coordinator runs it: Empty,
//! PreparingRebalance, CompletingRebalance, Stable (and Dead once deleted). Pure: every event
//! takes the current time and returns what to answer; the coordinator does the I/O. Answers to
//! JoinGroup and SyncGroup requests that must wait come out later as `Effect`s.

use std::collections::HashMap;

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::error::ResponseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka uses in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Group limits from the broker configs.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub session_timeout_ms_min: i32,
    pub session_timeout_ms_max: i32,
    pub initial_rebalance_delay_ms: u64,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// (protocol name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    /// Waiting for a JoinGroup answer.
    pub joining: bool,
    /// Waiting for a SyncGroup answer.
    pub syncing: bool,
    pub last_heartbeat_ms: u64,
}

impl Member {
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(n, _)| n == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }
}

/// What a JoinGroup request carries.
#[derive(Debug, Clone)]
pub struct JoinArgs {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new dynamic member must first learn its id (MEMBER_ID_REQUIRED).
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinResult {
    pub error: i16,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only the leader gets the members and their metadata.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    pub fn error(code: ResponseError, member_id: &str) -> JoinResult {
        JoinResult {
            error: code.code(),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(code: ResponseError) -> SyncResult {
        SyncResult { error: code.code(), protocol_type: None, protocol_name: None, assignment: Bytes::new() }
    }
}

/// An answer now, or later through an `Effect`.
#[derive(Debug, PartialEq)]
pub enum Reply<T> {
    Now(T),
    Later,
}

/// Something the coordinator must do after an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Answer the member's waiting JoinGroup.
    Join(String, JoinResult),
    /// Answer the member's waiting SyncGroup.
    Sync(String, SyncResult),
    /// The group's membership or assignment changed: write it to the offsets log.
    Persist,
}

/// What the offsets log keeps of a group.
#[derive(Debug, Clone)]
pub struct Saved {
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation_id: i32,
    pub leader: Option<String>,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation_id: i32,
    pub leader: Option<String>,
    pub members: IndexMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with when they expire.
    pending_members: HashMap<String, u64>,
    /// Static members: group.instance.id -> member id.
    static_members: HashMap<String, String>,
    /// When the current join phase ends even if not every member has rejoined.
    rebalance_deadline_ms: Option<u64>,
    /// The first rebalance of an empty group waits `initial_rebalance_delay_ms` for more members.
    initial_join: Option<InitialJoin>,
    /// Since when the group has had no members (for offset expiry).
    pub empty_since_ms: Option<u64>,
    limits: Limits,
}

#[derive(Debug, Clone, Copy)]
struct InitialJoin {
    started_ms: u64,
    /// Longest rebalance timeout of the members joining.
    limit_ms: u64,
}

impl Group {
    pub fn new(id: &str, limits: Limits, now_ms: u64) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            protocol_type: None,
            protocol: None,
            generation_id: 0,
            leader: None,
            members: IndexMap::new(),
            pending_members: HashMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline_ms: None,
            initial_join: None,
            empty_since_ms: Some(now_ms),
            limits,
        }
    }

    /// Restores a group loaded from the offsets log: Stable with its members (their sessions
    /// start now), or Empty.
    pub fn restore(id: &str, limits: Limits, now_ms: u64, saved: Saved) -> Group {
        let mut g = Group::new(id, limits, now_ms);
        g.protocol_type = saved.protocol_type;
        g.protocol = saved.protocol;
        g.generation_id = saved.generation_id;
        let leader = saved.leader;
        for mut m in saved.members {
            m.last_heartbeat_ms = now_ms;
            m.joining = false;
            m.syncing = false;
            if let Some(instance) = &m.group_instance_id {
                g.static_members.insert(instance.clone(), m.member_id.clone());
            }
            g.members.insert(m.member_id.clone(), m);
        }
        if !g.members.is_empty() {
            g.state = GroupState::Stable;
            g.leader =
                leader.filter(|l| g.members.contains_key(l)).or_else(|| g.members.keys().next().cloned());
            g.empty_since_ms = None;
        }
        g
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn new_member_id(prefix: &str) -> String {
        format!("{}-{}", if prefix.is_empty() { "member" } else { prefix }, uuid::Uuid::new_v4())
    }

    /// Handles JoinGroup. The answer comes now (errors, MEMBER_ID_REQUIRED, a rejoin that
    /// changes nothing) or later, when the join phase completes.
    /// Returns the member id the answer is for (new members get theirs here).
    pub fn join(&mut self, args: JoinArgs, now_ms: u64) -> (String, Reply<JoinResult>, Vec<Effect>) {
        let mut effects = Vec::new();
        let now_err = |code: ResponseError| {
            (args.member_id.clone(), Reply::Now(JoinResult::error(code, &args.member_id)), Vec::new())
        };
        if args.session_timeout_ms < self.limits.session_timeout_ms_min
            || args.session_timeout_ms > self.limits.session_timeout_ms_max
        {
            return now_err(ResponseError::InvalidSessionTimeout);
        }
        if !self.supports(&args.protocol_type, &args.protocols) {
            return now_err(ResponseError::InconsistentGroupProtocol);
        }
        let member_id = if args.member_id.is_empty() {
            if let Some(instance) = &args.group_instance_id {
                let new_id = Group::new_member_id(instance);
                if let Some(old_id) = self.static_members.get(instance).cloned() {
                    return self.rejoin_static(old_id, new_id, args, now_ms);
                }
                self.static_members.insert(instance.clone(), new_id.clone());
                new_id
            } else {
                let new_id = Group::new_member_id(&args.client_id);
                if args.require_known_member_id {
                    self.pending_members
                        .insert(new_id.clone(), now_ms + args.session_timeout_ms.max(0) as u64);
                    let reply = Reply::Now(JoinResult::error(ResponseError::MemberIdRequired, &new_id));
                    return (new_id, reply, effects);
                }
                new_id
            }
        } else if self.pending_members.remove(&args.member_id).is_some() {
            args.member_id.clone()
        } else {
            match self.members.get(&args.member_id) {
                None => return now_err(ResponseError::UnknownMemberId),
                Some(m) if m.group_instance_id != args.group_instance_id => {
                    return now_err(ResponseError::FencedInstanceId)
                }
                Some(_) => return self.rejoin(args, now_ms),
            }
        };
        self.add_member(member_id.clone(), args, now_ms);
        self.prepare_rebalance(now_ms, &mut effects);
        self.maybe_complete_join(now_ms, &mut effects);
        (member_id, Reply::Later, effects)
    }

    /// Whether a member with these protocols may be in this group.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols
                .iter()
                .any(|(name, _)| self.members.values().all(|m| m.protocols.iter().any(|(n, _)| n == name)))
    }

    fn add_member(&mut self, member_id: String, args: JoinArgs, now_ms: u64) {
        if self.members.is_empty() {
            self.protocol_type = Some(args.protocol_type.clone());
        }
        let member = Member {
            member_id: member_id.clone(),
            group_instance_id: args.group_instance_id,
            client_id: args.client_id,
            client_host: args.client_host,
            rebalance_timeout_ms: args.rebalance_timeout_ms,
            session_timeout_ms: args.session_timeout_ms,
            protocols: args.protocols,
            assignment: Bytes::new(),
            joining: true,
            syncing: false,
            last_heartbeat_ms: now_ms,
        };
        self.members.insert(member_id, member);
        self.empty_since_ms = None;
    }

    /// A known member joins again.
    fn rejoin(&mut self, args: JoinArgs, now_ms: u64) -> (String, Reply<JoinResult>, Vec<Effect>) {
        let mut effects = Vec::new();
        let id = args.member_id.clone();
        let unchanged = self.members.get(&id).is_some_and(|m| m.protocols == args.protocols);
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        match self.state {
            GroupState::CompletingRebalance | GroupState::Stable
                if unchanged && !(is_leader && self.state == GroupState::Stable) =>
            {
                // Nothing changed: answer with the current generation.
                if let Some(m) = self.members.get_mut(&id) {
                    m.last_heartbeat_ms = now_ms;
                }
                let members = if is_leader { self.member_list() } else { Vec::new() };
                let reply = Reply::Now(self.join_result(&id, members));
                return (id, reply, effects);
            }
            GroupState::Empty | GroupState::Dead => {
                let reply = Reply::Now(JoinResult::error(ResponseError::UnknownMemberId, &id));
                return (id, reply, effects);
            }
            _ => {}
        }
        if let Some(m) = self.members.get_mut(&id) {
            m.protocols = args.protocols;
            m.session_timeout_ms = args.session_timeout_ms;
            m.rebalance_timeout_ms = args.rebalance_timeout_ms;
            m.joining = true;
            m.last_heartbeat_ms = now_ms;
        }
        self.prepare_rebalance(now_ms, &mut effects);
        self.maybe_complete_join(now_ms, &mut effects);
        (id, Reply::Later, effects)
    }

    /// A static member (known group.instance.id) comes back with a new member id: the old id is
    /// fenced, and a stable group keeps its assignment without a rebalance.
    fn rejoin_static(
        &mut self,
        old_id: String,
        new_id: String,
        args: JoinArgs,
        now_ms: u64,
    ) -> (String, Reply<JoinResult>, Vec<Effect>) {
        let mut effects = Vec::new();
        let Some(mut member) = self.members.shift_remove(&old_id) else {
            // Recorded but gone: join as new.
            if let Some(instance) = &args.group_instance_id {
                self.static_members.insert(instance.clone(), new_id.clone());
            }
            self.add_member(new_id.clone(), args, now_ms);
            self.prepare_rebalance(now_ms, &mut effects);
            self.maybe_complete_join(now_ms, &mut effects);
            return (new_id, Reply::Later, effects);
        };
        if member.joining {
            effects.push(Effect::Join(
                old_id.clone(),
                JoinResult::error(ResponseError::FencedInstanceId, &old_id),
            ));
        }
        if member.syncing {
            effects.push(Effect::Sync(old_id.clone(), SyncResult::error(ResponseError::FencedInstanceId)));
        }
        let unchanged = member.protocols == args.protocols;
        member.member_id = new_id.clone();
        member.client_id = args.client_id.clone();
        member.client_host = args.client_host.clone();
        member.session_timeout_ms = args.session_timeout_ms;
        member.rebalance_timeout_ms = args.rebalance_timeout_ms;
        member.last_heartbeat_ms = now_ms;
        member.joining = false;
        member.syncing = false;
        self.members.insert(new_id.clone(), member);
        if let Some(instance) = &args.group_instance_id {
            self.static_members.insert(instance.clone(), new_id.clone());
        }
        let was_leader = self.leader.as_deref() == Some(old_id.as_str());
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        if self.state == GroupState::Stable && unchanged && !was_leader {
            effects.push(Effect::Persist);
            let reply = Reply::Now(self.join_result(&new_id, Vec::new()));
            return (new_id, reply, effects);
        }
        if let Some(m) = self.members.get_mut(&new_id) {
            m.protocols = args.protocols;
            m.joining = true;
        }
        self.prepare_rebalance(now_ms, &mut effects);
        self.maybe_complete_join(now_ms, &mut effects);
        (new_id, Reply::Later, effects)
    }

    fn member_list(&self) -> Vec<(String, Option<String>, Bytes)> {
        let protocol = self.protocol.clone().unwrap_or_default();
        self.members
            .values()
            .map(|m| (m.member_id.clone(), m.group_instance_id.clone(), m.metadata_for(&protocol)))
            .collect()
    }

    fn join_result(&self, member_id: &str, members: Vec<(String, Option<String>, Bytes)>) -> JoinResult {
        JoinResult {
            error: 0,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members,
        }
    }

    /// Starts (or restarts) a join phase. Members waiting on SyncGroup are told to rejoin.
    fn prepare_rebalance(&mut self, now_ms: u64, effects: &mut Vec<Effect>) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut().filter(|m| m.syncing) {
                m.syncing = false;
                effects.push(Effect::Sync(
                    m.member_id.clone(),
                    SyncResult::error(ResponseError::RebalanceInProgress),
                ));
            }
        }
        let timeout_ms =
            self.members.values().map(|m| m.rebalance_timeout_ms.max(0) as u64).max().unwrap_or(0);
        match self.state {
            GroupState::PreparingRebalance => {
                if let Some(initial) = &mut self.initial_join {
                    // A member arriving during the initial delay extends it, within the limit.
                    initial.limit_ms = initial.limit_ms.max(timeout_ms);
                    let delay = self.limits.initial_rebalance_delay_ms;
                    self.rebalance_deadline_ms =
                        Some((now_ms + delay).min(initial.started_ms + initial.limit_ms.max(delay)));
                }
            }
            GroupState::Empty if self.limits.initial_rebalance_delay_ms > 0 => {
                self.state = GroupState::PreparingRebalance;
                self.initial_join = Some(InitialJoin { started_ms: now_ms, limit_ms: timeout_ms });
                self.rebalance_deadline_ms =
                    Some(now_ms + self.limits.initial_rebalance_delay_ms.min(timeout_ms.max(1)));
            }
            _ => {
                self.state = GroupState::PreparingRebalance;
                self.initial_join = None;
                self.rebalance_deadline_ms = Some(now_ms + timeout_ms);
            }
        }
    }

    /// Completes the join phase once every member has rejoined (outside the initial delay).
    fn maybe_complete_join(&mut self, now_ms: u64, effects: &mut Vec<Effect>) {
        if self.state != GroupState::PreparingRebalance || self.initial_join.is_some() {
            return;
        }
        if self.members.values().all(|m| m.joining) && self.pending_members.is_empty() {
            self.complete_join(now_ms, effects);
        }
    }

    /// Ends the join phase: members that did not rejoin are dropped, a new generation starts,
    /// everyone waiting gets their JoinGroup answer (the leader with the member list).
    fn complete_join(&mut self, now_ms: u64, effects: &mut Vec<Effect>) {
        let gone: Vec<String> =
            self.members.values().filter(|m| !m.joining).map(|m| m.member_id.clone()).collect();
        for id in gone {
            self.remove_member(&id, effects);
        }
        self.rebalance_deadline_ms = None;
        self.initial_join = None;
        self.pending_members.clear();
        self.generation_id += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            self.empty_since_ms = Some(now_ms);
            effects.push(Effect::Persist);
            return;
        }
        self.protocol = self.select_protocol();
        if !self.leader.as_ref().is_some_and(|l| self.members.contains_key(l)) {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let leader = self.leader.clone().unwrap_or_default();
        let all = self.member_list();
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let members = if id == leader { all.clone() } else { Vec::new() };
            let result = self.join_result(&id, members);
            if let Some(m) = self.members.get_mut(&id) {
                m.joining = false;
                m.last_heartbeat_ms = now_ms;
            }
            effects.push(Effect::Join(id, result));
        }
    }

    /// The protocol every member supports that most members prefer.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| self.members.values().all(|m| m.protocols.iter().any(|(x, _)| x == *n)))
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0, *c)).collect();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
                if let Some(v) = votes.iter_mut().find(|(_, c)| *c == name) {
                    v.0 += 1;
                }
            }
        }
        // Most votes; on a tie the earlier candidate (the first member's preference) wins.
        let best = votes
            .iter()
            .enumerate()
            .max_by_key(|(i, (n, _))| (*n, usize::MAX - i))
            .map(|(_, (_, c))| (*c).clone());
        best
    }

    fn remove_member(&mut self, id: &str, effects: &mut Vec<Effect>) {
        if let Some(m) = self.members.shift_remove(id) {
            if m.joining {
                effects.push(Effect::Join(
                    id.to_string(),
                    JoinResult::error(ResponseError::UnknownMemberId, id),
                ));
            }
            if m.syncing {
                effects.push(Effect::Sync(id.to_string(), SyncResult::error(ResponseError::UnknownMemberId)));
            }
            if let Some(instance) = &m.group_instance_id {
                if self.static_members.get(instance).map(String::as_str) == Some(id) {
                    self.static_members.remove(instance);
                }
            }
            if self.leader.as_deref() == Some(id) {
                self.leader = None;
            }
        }
    }

    /// Checks a request's member, instance and generation against the group.
    fn check_member(
        &self,
        member_id: &str,
        instance: &Option<String>,
        generation_id: i32,
    ) -> Result<(), ResponseError> {
        if let Some(instance) = instance {
            if let Some(known) = self.static_members.get(instance) {
                if known != member_id {
                    return Err(ResponseError::FencedInstanceId);
                }
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation_id != self.generation_id {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    pub fn sync(
        &mut self,
        member_id: &str,
        instance: &Option<String>,
        generation_id: i32,
        protocol: (Option<&str>, Option<&str>),
        assignments: Vec<(String, Bytes)>,
        now_ms: u64,
    ) -> (Reply<SyncResult>, Vec<Effect>) {
        let mut effects = Vec::new();
        if let Err(e) = self.check_member(member_id, instance, generation_id) {
            return (Reply::Now(SyncResult::error(e)), effects);
        }
        let (ptype, pname) = protocol;
        if ptype.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || pname.is_some_and(|n| Some(n) != self.protocol.as_deref())
        {
            return (Reply::Now(SyncResult::error(ResponseError::InconsistentGroupProtocol)), effects);
        }
        match self.state {
            GroupState::PreparingRebalance => {
                (Reply::Now(SyncResult::error(ResponseError::RebalanceInProgress)), effects)
            }
            GroupState::Empty | GroupState::Dead => {
                (Reply::Now(SyncResult::error(ResponseError::UnknownMemberId)), effects)
            }
            GroupState::Stable => {
                let assignment =
                    self.members.get(member_id).map(|m| m.assignment.clone()).unwrap_or_default();
                (Reply::Now(self.sync_result(assignment)), effects)
            }
            GroupState::CompletingRebalance => {
                if let Some(m) = self.members.get_mut(member_id) {
                    m.syncing = true;
                    m.last_heartbeat_ms = now_ms;
                }
                if self.leader.as_deref() == Some(member_id) {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.remove(&m.member_id).unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    let ready: Vec<(String, Bytes)> = self
                        .members
                        .values()
                        .filter(|m| m.syncing)
                        .map(|m| (m.member_id.clone(), m.assignment.clone()))
                        .collect();
                    for (id, assignment) in ready {
                        if let Some(m) = self.members.get_mut(&id) {
                            m.syncing = false;
                        }
                        effects.push(Effect::Sync(id, self.sync_result(assignment)));
                    }
                    effects.push(Effect::Persist);
                }
                (Reply::Later, effects)
            }
        }
    }

    fn sync_result(&self, assignment: Bytes) -> SyncResult {
        SyncResult {
            error: 0,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment,
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance: &Option<String>,
        generation_id: i32,
        now_ms: u64,
    ) -> i16 {
        if let Err(e) = self.check_member(member_id, instance, generation_id) {
            return e.code();
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat_ms = now_ms;
        }
        match self.state {
            GroupState::PreparingRebalance => ResponseError::RebalanceInProgress.code(),
            GroupState::CompletingRebalance | GroupState::Stable => 0,
            GroupState::Empty | GroupState::Dead => ResponseError::UnknownMemberId.code(),
        }
    }

    /// Removes members (LeaveGroup). Each gets its own error code.
    pub fn leave(&mut self, who: &[(String, Option<String>)], now_ms: u64) -> (Vec<i16>, Vec<Effect>) {
        let mut effects = Vec::new();
        let mut codes = Vec::with_capacity(who.len());
        let mut removed = false;
        for (member_id, instance) in who {
            let id = match instance.as_ref().and_then(|i| self.static_members.get(i)) {
                Some(known) if !member_id.is_empty() && known != member_id => {
                    codes.push(ResponseError::FencedInstanceId.code());
                    continue;
                }
                Some(known) => known.clone(),
                None => member_id.clone(),
            };
            if !self.members.contains_key(&id) {
                codes.push(ResponseError::UnknownMemberId.code());
                continue;
            }
            self.remove_member(&id, &mut effects);
            codes.push(0);
            removed = true;
        }
        if removed {
            self.after_removal(now_ms, &mut effects);
        }
        (codes, effects)
    }

    fn after_removal(&mut self, now_ms: u64, effects: &mut Vec<Effect>) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if self.members.is_empty() {
                    self.prepare_rebalance(now_ms, effects);
                    self.complete_join(now_ms, effects);
                } else {
                    self.prepare_rebalance(now_ms, effects);
                }
            }
            GroupState::PreparingRebalance if self.members.is_empty() => self.complete_join(now_ms, effects),
            GroupState::PreparingRebalance => self.maybe_complete_join(now_ms, effects),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Whether any of this group's timers can come due: its members' sessions, the member ids
    /// it handed out, or the deadline (or initial delay) of a join phase under way.
    pub fn needs_ticks(&self) -> bool {
        !self.members.is_empty()
            || !self.pending_members.is_empty()
            || self.state == GroupState::PreparingRebalance
    }

    /// Time passes: sessions expire, join phases end at their deadline, unused member ids lapse.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        self.pending_members.retain(|_, expires| *expires > now_ms);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                !m.joining && !m.syncing && now_ms > m.last_heartbeat_ms + m.session_timeout_ms.max(0) as u64
            })
            .map(|m| m.member_id.clone())
            .collect();
        if !expired.is_empty() {
            for id in &expired {
                self.remove_member(id, &mut effects);
            }
            self.after_removal(now_ms, &mut effects);
        }
        if self.state == GroupState::PreparingRebalance
            && self.rebalance_deadline_ms.is_some_and(|d| now_ms >= d)
        {
            self.complete_join(now_ms, &mut effects);
        } else if self.state == GroupState::PreparingRebalance {
            self.maybe_complete_join(now_ms, &mut effects);
        }
        effects
    }

    /// Whether an OffsetCommit from this member may be applied. A commit with no member and
    /// generation -1 comes from a consumer that assigns partitions itself; it is allowed while
    /// the group has no members.
    pub fn check_commit(
        &self,
        member_id: &str,
        instance: &Option<String>,
        generation_id: i32,
    ) -> Result<(), ResponseError> {
        if generation_id < 0 && member_id.is_empty() && self.members.is_empty() {
            return Ok(());
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        self.check_member(member_id, instance, generation_id)
    }

    /// Topics the members subscribe to, when they use the consumer protocol.
    pub fn subscribed_topics(&self) -> Vec<String> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        let mut topics = Vec::new();
        if self.protocol_type.as_deref() != Some("consumer") {
            return topics;
        }
        for m in self.members.values() {
            let mut data = m.metadata_for(self.protocol.as_deref().unwrap_or_default());
            if data.len() < 2 {
                continue;
            }
            let version = i16::from_be_bytes([data[0], data[1]]);
            let _ = bytes::Buf::get_i16(&mut data);
            if let Ok(sub) = ConsumerProtocolSubscription::decode(&mut data, version.clamp(0, 3)) {
                topics.extend(sub.topics.iter().map(|t| t.to_string()));
            }
        }
        topics.sort();
        topics.dedup();
        topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits =
        Limits { session_timeout_ms_min: 100, session_timeout_ms_max: 60_000, initial_rebalance_delay_ms: 0 };

    fn args(member_id: &str, instance: Option<&str>) -> JoinArgs {
        JoinArgs {
            member_id: member_id.into(),
            group_instance_id: instance.map(String::from),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 1000,
            rebalance_timeout_ms: 5000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m")), ("roundrobin".into(), Bytes::new())],
            require_known_member_id: true,
        }
    }

    fn joined(effects: &[Effect]) -> Vec<(String, JoinResult)> {
        effects
            .iter()
            .filter_map(|e| if let Effect::Join(id, r) = e { Some((id.clone(), r.clone())) } else { None })
            .collect()
    }

    /// Joins a new dynamic member through the MEMBER_ID_REQUIRED round trip; returns its id.
    fn join_new(g: &mut Group, now: u64) -> (String, Vec<Effect>) {
        let (_, reply, _) = g.join(args("", None), now);
        let Reply::Now(r) = reply else { panic!("first join answers at once") };
        assert_eq!(r.error, ResponseError::MemberIdRequired.code());
        let (_, reply, effects) = g.join(args(&r.member_id, None), now);
        assert_eq!(reply, Reply::Later);
        (r.member_id, effects)
    }

    #[test]
    fn single_member_join_sync_becomes_stable() {
        let mut g = Group::new("g", LIMITS, 0);
        let (id, effects) = join_new(&mut g, 0);
        let answers = joined(&effects);
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].1.generation_id, 1);
        assert_eq!(answers[0].1.leader, id);
        assert_eq!(answers[0].1.protocol_name.as_deref(), Some("range"));
        assert_eq!(answers[0].1.members.len(), 1, "the leader sees the members");
        assert_eq!(g.state, GroupState::CompletingRebalance);
        let (reply, effects) =
            g.sync(&id, &None, 1, (None, None), vec![(id.clone(), Bytes::from_static(b"a"))], 1);
        assert_eq!(reply, Reply::Later);
        assert!(effects.contains(&Effect::Sync(
            id.clone(),
            SyncResult {
                error: 0,
                protocol_type: Some("consumer".into()),
                protocol_name: Some("range".into()),
                assignment: Bytes::from_static(b"a")
            }
        )));
        assert!(effects.contains(&Effect::Persist));
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(g.heartbeat(&id, &None, 1, 2), 0);
    }

    #[test]
    fn only_groups_with_members_or_a_join_under_way_need_ticks() {
        let mut g = Group::new("g", LIMITS, 0);
        assert!(!g.needs_ticks(), "a group kept only for its committed offsets");
        let (id, _) = join_new(&mut g, 0);
        assert!(g.needs_ticks(), "a member joined");
        g.sync(&id, &None, 1, (None, None), vec![(id.clone(), Bytes::new())], 1);
        assert_eq!(g.state, GroupState::Stable);
        assert!(g.needs_ticks(), "its session can expire");
        let effects = g.tick(10_000);
        assert!(g.members.is_empty(), "the session expired: {effects:?}");
        assert_eq!(g.state, GroupState::Empty);
        assert!(!g.needs_ticks(), "nothing left to time");

        let mut h = Group::new("h", LIMITS, 0);
        let (_, reply, _) = h.join(args("", None), 0);
        assert!(matches!(reply, Reply::Now(ref r) if r.error == ResponseError::MemberIdRequired.code()));
        assert!(h.needs_ticks(), "the member id handed out expires unless used");
        h.tick(10_000);
        assert!(!h.needs_ticks(), "it expired");
    }

    #[test]
    fn second_member_triggers_rebalance_and_both_rejoin() {
        let mut g = Group::new("g", LIMITS, 0);
        let (a, _) = join_new(&mut g, 0);
        g.sync(&a, &None, 1, (None, None), vec![], 0);
        let (b, effects) = join_new(&mut g, 10);
        assert!(joined(&effects).is_empty(), "waits for the existing member");
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(g.heartbeat(&a, &None, 1, 11), ResponseError::RebalanceInProgress.code());
        let (_, reply, effects) = g.join(args(&a, None), 12);
        assert_eq!(reply, Reply::Later);
        let answers = joined(&effects);
        assert_eq!(answers.len(), 2);
        assert!(answers.iter().all(|(_, r)| r.generation_id == 2));
        let leader = &answers[0].1.leader;
        assert_eq!(leader, &a, "the previous leader stays leader");
        assert!(answers.iter().any(|(id, r)| id == &b && r.members.is_empty()));
    }

    #[test]
    fn session_expiry_removes_member_and_rebalances() {
        let mut g = Group::new("g", LIMITS, 0);
        let (a, _) = join_new(&mut g, 0);
        g.sync(&a, &None, 1, (None, None), vec![], 0);
        let (b, _) = join_new(&mut g, 0);
        g.join(args(&a, None), 0);
        g.sync(&a, &None, 2, (None, None), vec![], 0);
        g.sync(&b, &None, 2, (None, None), vec![], 0);
        assert_eq!(g.state, GroupState::Stable);
        // a keeps heartbeating, b goes silent.
        for t in (100..=900).step_by(100) {
            g.heartbeat(&a, &None, 2, t);
            assert!(g.tick(t).is_empty());
        }
        g.tick(1500);
        assert!(!g.members.contains_key(&b));
        assert_eq!(g.state, GroupState::PreparingRebalance);
        let (_, _, effects) = g.join(args(&a, None), 1600);
        assert_eq!(joined(&effects).len(), 1);
        assert_eq!(g.generation_id, 3);
    }

    #[test]
    fn rebalance_deadline_drops_members_that_do_not_rejoin() {
        let mut g = Group::new("g", LIMITS, 0);
        let (a, _) = join_new(&mut g, 0);
        g.sync(&a, &None, 1, (None, None), vec![], 0);
        let (b, _) = join_new(&mut g, 0);
        // a never rejoins: after its rebalance timeout (5 s) the join completes without it.
        let effects = g.tick(5001);
        let answers = joined(&effects);
        assert!(answers.iter().any(|(id, r)| id == &b && r.error == 0 && r.leader == b));
        assert!(!g.members.contains_key(&a));
    }

    #[test]
    fn leave_triggers_rebalance_and_last_leave_empties() {
        let mut g = Group::new("g", LIMITS, 0);
        let (a, _) = join_new(&mut g, 0);
        g.sync(&a, &None, 1, (None, None), vec![], 0);
        let (codes, _) = g.leave(&[(a.clone(), None), ("nobody".into(), None)], 5);
        assert_eq!(codes, vec![0, ResponseError::UnknownMemberId.code()]);
        assert_eq!(g.state, GroupState::Empty);
        assert_eq!(g.empty_since_ms, Some(5));
    }

    #[test]
    fn stale_generation_commit_and_unknown_member_are_rejected() {
        let mut g = Group::new("g", LIMITS, 0);
        assert_eq!(g.check_commit("", &None, -1), Ok(()), "assign()-style commit to an empty group");
        let (a, _) = join_new(&mut g, 0);
        g.sync(&a, &None, 1, (None, None), vec![], 0);
        assert_eq!(g.check_commit(&a, &None, 1), Ok(()));
        assert_eq!(g.check_commit(&a, &None, 0), Err(ResponseError::IllegalGeneration));
        assert_eq!(g.check_commit("x", &None, 1), Err(ResponseError::UnknownMemberId));
        assert_eq!(g.check_commit("", &None, -1), Err(ResponseError::UnknownMemberId));
    }

    #[test]
    fn static_member_rejoin_keeps_assignment_without_rebalance() {
        let mut g = Group::new("g", LIMITS, 0);
        let (first, reply, _) = g.join(args("", Some("i1")), 0);
        assert_eq!(reply, Reply::Later, "static members need no MEMBER_ID_REQUIRED round trip");
        let (_, reply, effects) = g.join(args("", Some("i2")), 0);
        assert_eq!(reply, Reply::Later);
        assert!(joined(&effects).is_empty());
        g.join(args(&first, Some("i1")), 0);
        let second = g.members.keys().find(|k| **k != first).cloned().unwrap();
        g.sync(
            &first,
            &Some("i1".into()),
            2,
            (None, None),
            vec![(second.clone(), Bytes::from_static(b"x"))],
            0,
        );
        g.sync(&second, &Some("i2".into()), 2, (None, None), vec![], 0);
        assert_eq!(g.state, GroupState::Stable);
        // i2 restarts: new member id, same assignment, same generation, no rebalance.
        let (_, reply, _) = g.join(args("", Some("i2")), 100);
        let Reply::Now(r) = reply else { panic!("answered at once") };
        assert_eq!((r.error, r.generation_id), (0, 2));
        assert_ne!(r.member_id, second);
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(g.members[&r.member_id].assignment, Bytes::from_static(b"x"));
        // The old incarnation is fenced.
        assert_eq!(g.heartbeat(&second, &Some("i2".into()), 2, 101), ResponseError::FencedInstanceId.code());
    }

    #[test]
    fn initial_delay_collects_members_before_first_generation() {
        let limits = Limits { initial_rebalance_delay_ms: 3000, ..LIMITS };
        let mut g = Group::new("g", limits, 0);
        let (_, effects) = join_new(&mut g, 0);
        assert!(joined(&effects).is_empty());
        let (_, effects) = join_new(&mut g, 1000);
        assert!(joined(&effects).is_empty());
        assert!(g.tick(3500).is_empty(), "the second member extended the delay");
        let answers = joined(&g.tick(4000));
        assert_eq!(answers.len(), 2);
        assert_eq!(g.generation_id, 1);
    }

    #[test]
    fn inconsistent_protocols_are_refused() {
        let mut g = Group::new("g", LIMITS, 0);
        join_new(&mut g, 0);
        let mut other = args("", None);
        other.protocols = vec![("sticky".into(), Bytes::new())];
        let (_, reply, _) = g.join(other, 1);
        assert_eq!(reply, Reply::Now(JoinResult::error(ResponseError::InconsistentGroupProtocol, "")));
    }
}
