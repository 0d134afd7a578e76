// Starts the real pinion binary for a test, following the same contract as
// tests/py/conftest.py: `pinion serve --listen 127.0.0.1:0 --data-dir DIR` prints
// "pinion: listening on 127.0.0.1:PORT" when ready and exits 0 on SIGTERM.
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');

const REPO = path.resolve(__dirname, '..', '..');
const BIN = process.env.PINION_BIN || path.join(REPO, 'target', 'release', 'pinion');
// A real disk (the broker uses O_DIRECT), never tmpfs.
const DATA_ROOT = path.join(REPO, 'target', 'test-data');
const READY_RE = /^pinion: listening on (127\.0\.0\.1:(\d+))\s*$/m;

async function startBroker({ name = 'js', overrides = {}, args = [], timeoutMs = 20000 } = {}) {
  if (!fs.existsSync(BIN)) throw new Error(`broker binary not found at ${BIN}`);
  const workdir = path.join(DATA_ROOT, `${name}-${crypto.randomBytes(4).toString('hex')}`);
  const dataDir = path.join(workdir, 'data');
  fs.mkdirSync(dataDir, { recursive: true });
  const argv = ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir, ...args];
  for (const [k, v] of Object.entries(overrides)) argv.push('--override', `${k}=${v}`);

  const log = fs.createWriteStream(path.join(workdir, 'broker.log'));
  // Own process group, as in conftest.py: only this helper signals the broker.
  const proc = spawn(BIN, argv, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let stdout = '';
  let stderr = '';
  // Both pipes are always drained so the broker never blocks writing to them.
  proc.stdout.on('data', (d) => { stdout += d; log.write(d); });
  proc.stderr.on('data', (d) => { stderr = (stderr + d).slice(-8000); log.write(d); });
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));

  const bootstrap = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`no 'listening on' line within ${timeoutMs} ms; stderr:\n${stderr}`));
    }, timeoutMs);
    proc.stdout.on('data', () => {
      const m = READY_RE.exec(stdout);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`broker exited (code ${code}, signal ${signal}) before listening; stderr:\n${stderr}`));
    });
  });

  return {
    bootstrap,
    dataDir,
    proc,
    stderrTail: () => stderr,
    // Graceful stop: resolves with the exit code (0 expected) or rejects after 15 s.
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill('SIGTERM');
      const timeout = new Promise((_, reject) => setTimeout(() => {
        proc.kill('SIGKILL');
        reject(new Error('broker did not exit within 15 s of SIGTERM'));
      }, 15000).unref());
      const { code } = await Promise.race([exited, timeout]);
      log.end();
      return code;
    },
    removeData() { fs.rmSync(workdir, { recursive: true, force: true }); },
  };
}

module.exports = { startBroker };
