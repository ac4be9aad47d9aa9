// A real @discordjs/voice bot, driven by voicesim's tests over stdin and stdout.
//
// Every line on stdin is one JSON request, {"id": n, "cmd": "...", ...}; every request
// gets exactly one reply line, {"id": n, "ok": true, ...} or {"id": n, "ok": false,
// "error": "..."}. Lines without an "id" are events the bot reports on its own:
// {"event": "packet", "user_id", "data"} for every Opus packet its receiver hands on,
// in order, and {"event": "speaking", "user_id", "ssrc"} when the receiver learns whose
// SSRC is whose. Binary data travels as base64. Diagnostics go to stderr only, so the
// tests can show them when something fails.
//
// Voice is joined the way a discord.js bot joins it: joinVoiceChannel() with an adapter
// whose sendPayload() writes op 4 to the main gateway, which this script holds itself
// (Hello, Identify, heartbeats), and which feeds the bot's own VOICE_STATE_UPDATE and
// its guild's VOICE_SERVER_UPDATE back into @discordjs/voice. Nothing in the library is
// patched; the emulator's voice gateway CA is trusted through NODE_EXTRA_CA_CERTS.
//
// Requests:
//   login     {state | state_file, user}          Identify over the main gateway
//   join      {guild_id, channel_id, dave, self_deaf?, self_mute?, debug?}
//   subscribe {user_id}                            report that user's packets
//   play      {frames: [base64, ...]}             play them as one AudioResource (Opus)
//   set_speaking {speaking}                        VoiceConnection.setSpeaking()
//   status    {}                                   connection, SSRCs and DAVE state
//   leave     {}                                   destroy the voice connection (op 4)
//   quit      {}                                   close the gateway and exit

import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { Readable } from "node:stream";

import {
  AudioPlayerStatus,
  EndBehaviorType,
  NoSubscriberBehavior,
  StreamType,
  VoiceConnectionStatus,
  createAudioPlayer,
  createAudioResource,
  entersState,
  joinVoiceChannel,
} from "@discordjs/voice";
import WebSocket from "ws";

// GUILDS | GUILD_VOICE_STATES: all a voice bot needs from the main gateway.
const INTENTS = 1 | (1 << 7);
const TIMEOUT_MS = 20_000;

function emit(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

function log(message) {
  process.stderr.write(`[peer] ${message}\n`);
}

// -- main gateway ------------------------------------------------------------------

class Gateway {
  constructor(url, token) {
    this.url = url;
    this.token = token;
    this.seq = null;
    this.userId = null;
    this.sessionId = null;
    this.heartbeat = undefined;
    this.voiceAdapters = new Map();
    this.ws = null;
  }

  connect() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      const timer = setTimeout(() => reject(new Error("no READY in time")), TIMEOUT_MS);
      ws.on("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
      ws.on("close", (code, reason) => {
        clearInterval(this.heartbeat);
        log(`main gateway closed: ${code} ${reason}`);
        for (const adapter of this.voiceAdapters.values()) adapter.destroy();
        this.voiceAdapters.clear();
      });
      ws.on("message", (data) => {
        const payload = JSON.parse(data.toString());
        if (payload.s !== null && payload.s !== undefined) this.seq = payload.s;
        if (payload.op === 10) {
          this.startHeartbeat(payload.d.heartbeat_interval);
          this.send({
            op: 2,
            d: {
              token: this.token,
              intents: INTENTS,
              properties: { os: process.platform, browser: "voicesim-node-peer", device: "voicesim-node-peer" },
            },
          });
        } else if (payload.op === 1) {
          this.sendHeartbeat();
        } else if (payload.op === 9) {
          clearTimeout(timer);
          reject(new Error("invalid session"));
        } else if (payload.op === 0) {
          if (payload.t === "READY") {
            this.userId = payload.d.user.id;
            this.sessionId = payload.d.session_id;
            clearTimeout(timer);
            resolve(payload.d);
          }
          this.dispatch(payload.t, payload.d);
        }
      });
    });
  }

  startHeartbeat(interval) {
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => this.sendHeartbeat(), interval);
  }

  sendHeartbeat() {
    this.send({ op: 1, d: this.seq });
  }

  send(payload) {
    if (this.ws === null || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(payload));
    return true;
  }

  // What discord.js's voice adapter does: only this bot's own voice state, and the
  // server update of a guild it is joining, go to @discordjs/voice.
  dispatch(event, data) {
    if (event === "VOICE_STATE_UPDATE" && data.user_id === this.userId) {
      this.voiceAdapters.get(data.guild_id)?.onVoiceStateUpdate(data);
    } else if (event === "VOICE_SERVER_UPDATE") {
      this.voiceAdapters.get(data.guild_id)?.onVoiceServerUpdate(data);
    }
  }

  adapterCreator(guildId) {
    return (methods) => {
      this.voiceAdapters.set(guildId, methods);
      return {
        sendPayload: (payload) => this.send(payload),
        destroy: () => this.voiceAdapters.delete(guildId),
      };
    };
  }

  close() {
    clearInterval(this.heartbeat);
    if (this.ws !== null && this.ws.readyState === WebSocket.OPEN) this.ws.close(1000);
  }
}

// -- the bot -----------------------------------------------------------------------

let gateway = null;
let connection = null;

function networkingState() {
  if (connection === null || connection.state.status !== VoiceConnectionStatus.Ready) return null;
  return connection.state.networking.state;
}

function daveStatus() {
  const dave = networkingState()?.dave;
  if (!dave) return null;
  const session = dave.session;
  const ready = Boolean(session?.ready);
  const stats = ready ? session.getEncryptionStats() : null;
  return {
    protocol_version: dave.protocolVersion,
    ready,
    epoch: session?.epoch === null || session?.epoch === undefined ? null : Number(session.epoch),
    user_ids: ready ? session.getUserIds() : [],
    privacy_code: dave.voicePrivacyCode,
    pending_transitions: dave.pendingTransitions.size,
    encrypted_frames: stats === null ? 0 : stats.successes,
    encrypt_failures: stats === null ? 0 : stats.failures,
  };
}

const handlers = {
  async login({ state, state_file: stateFile, user }) {
    const info = state ?? JSON.parse(readFileSync(stateFile, "utf8"));
    const account = info.users.find((u) => u.name === user);
    if (!account) throw new Error(`no user named ${user} in the emulator state`);
    gateway = new Gateway(info.gateway_url, account.token);
    const ready = await gateway.connect();
    return { user_id: ready.user.id, session_id: ready.session_id };
  },

  async join({ guild_id: guildId, channel_id: channelId, dave, self_deaf: selfDeaf, self_mute: selfMute, debug }) {
    if (gateway === null) throw new Error("join before login");
    connection = joinVoiceChannel({
      guildId,
      channelId,
      adapterCreator: gateway.adapterCreator(guildId),
      daveEncryption: dave,
      selfDeaf: selfDeaf ?? true,
      selfMute: selfMute ?? false,
      group: gateway.userId,
      debug: Boolean(debug),
    });
    connection.on("debug", (message) => log(message));
    connection.on("error", (error) => {
      log(`voice connection error: ${error.stack ?? error}`);
      emit({ event: "error", message: String(error) });
    });
    connection.on("stateChange", (from, to) => {
      emit({ event: "connection", from: from.status, to: to.status, close_code: to.closeCode ?? null });
    });
    connection.receiver.ssrcMap.on("update", (_, data) => {
      emit({ event: "speaking", user_id: data.userId, ssrc: data.audioSSRC });
    });
    await entersState(connection, VoiceConnectionStatus.Ready, TIMEOUT_MS);
    const { connectionData, dave: session } = networkingState();
    return {
      ssrc: connectionData.ssrc,
      mode: connectionData.encryptionMode,
      dave_protocol_version: session ? session.protocolVersion : 0,
    };
  },

  async subscribe({ user_id: userId }) {
    if (connection === null) throw new Error("subscribe before join");
    const stream = connection.receiver.subscribe(userId, { end: { behavior: EndBehaviorType.Manual } });
    stream.on("data", (packet) => {
      emit({ event: "packet", user_id: userId, data: packet.toString("base64") });
    });
    stream.on("error", (error) => {
      log(`receive stream of ${userId} failed: ${error.stack ?? error}`);
      emit({ event: "error", message: `receive stream of ${userId}: ${error}` });
    });
    return {};
  },

  async play({ frames }) {
    if (connection === null) throw new Error("play before join");
    const packets = frames.map((frame) => Buffer.from(frame, "base64"));
    const player = createAudioPlayer({ behaviors: { noSubscriber: NoSubscriberBehavior.Play } });
    const subscription = connection.subscribe(player);
    const resource = createAudioResource(Readable.from(packets, { objectMode: true }), {
      inputType: StreamType.Opus,
    });
    const failed = new Promise((_, reject) => player.once("error", reject));
    player.play(resource);
    await Promise.race([entersState(player, AudioPlayerStatus.Playing, TIMEOUT_MS), failed]);
    await Promise.race([entersState(player, AudioPlayerStatus.Idle, TIMEOUT_MS), failed]);
    subscription?.unsubscribe();
    player.stop(true);
    return { frames: packets.length, playback_ms: resource.playbackDuration };
  },

  // What a bot calls to announce its SSRC (op 5) before its first packet; playing
  // sends the same op 5 only back to back with that packet.
  async set_speaking({ speaking }) {
    if (connection === null) throw new Error("set_speaking before join");
    return { sent: connection.setSpeaking(Boolean(speaking)) };
  },

  async status() {
    const state = networkingState();
    const speakers = connection === null ? [] : [...connection.receiver.ssrcMap.map.values()];
    return {
      connection: connection === null ? null : connection.state.status,
      ssrc: state?.connectionData?.ssrc ?? null,
      speakers: speakers.map((s) => ({ user_id: s.userId, ssrc: s.audioSSRC })),
      dave: daveStatus(),
      decrypted: Object.fromEntries(
        speakers.map((s) => {
          const stats = state?.dave?.session?.ready ? state.dave.session.getDecryptionStats(s.userId) : null;
          return [s.userId, stats === null ? null : { successes: stats.successes, failures: stats.failures }];
        }),
      ),
    };
  },

  async leave() {
    if (connection !== null && connection.state.status !== VoiceConnectionStatus.Destroyed) {
      connection.destroy();
    }
    return {};
  },

  async quit() {
    await handlers.leave();
    gateway?.close();
    setTimeout(() => process.exit(0), 50);
    return {};
  },
};

// -- the line protocol -------------------------------------------------------------

process.on("uncaughtException", (error) => {
  log(`uncaught: ${error.stack ?? error}`);
  emit({ event: "fatal", message: String(error) });
  process.exit(1);
});

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on("line", async (line) => {
  if (!line.trim()) return;
  let request;
  try {
    request = JSON.parse(line);
  } catch (error) {
    emit({ event: "fatal", message: `bad request line: ${error}` });
    return;
  }
  const handler = handlers[request.cmd];
  try {
    if (!handler) throw new Error(`unknown command ${request.cmd}`);
    const result = await handler(request);
    emit({ id: request.id, ok: true, ...result });
  } catch (error) {
    log(`${request.cmd} failed: ${error.stack ?? error}`);
    emit({ id: request.id, ok: false, error: String(error) });
  }
});
// The test process went away: leave the way a bot does on shutdown.
lines.on("close", () => {
  handlers.quit();
});

emit({ event: "started", node: process.version });
