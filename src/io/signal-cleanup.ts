import { rmSync } from 'node:fs';

/** The signals that stop a CLI run: Ctrl-C, `kill`/`timeout`, a closed terminal. */
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * Removes `path` (recursively) if the process gets SIGINT/SIGTERM/SIGHUP before the returned
 * function is called. When no other listener handles the signal, the process then dies of it as it
 * would have (exit status 128 + n): the handler only adds the cleanup. Handlers run on the event loop,
 * so the work in between must yield now and then (the codecs do between blocks and windows).
 */
export function removeOnSignal(path: string): () => void {
  const onSignal = (signal: NodeJS.Signals): void => {
    dispose();
    try {
      rmSync(path, { recursive: true, force: true });
    } finally {
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    }
  };
  const dispose = (): void => {
    for (const s of SIGNALS) process.removeListener(s, onSignal);
  };
  for (const s of SIGNALS) process.on(s, onSignal);
  return dispose;
}
