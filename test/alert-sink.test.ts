import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AlertSeverity, AlertType } from '../src/entities/enums';
import type { AlertService, AlertSignal } from '../src/services/alert.service';
import { AlertSink } from '../src/services/alert-sink';

// The sink's bookkeeping between the detectors and the database, with the database's answers
// scripted so the interleaving that lost an occurrence under load happens every time.
const signal: AlertSignal = {
  type: AlertType.REVOKED_KEY_USED,
  severity: AlertSeverity.HIGH,
  subject: 'key:k1',
  message: 'Revoked key was presented',
  details: {},
  windowSeconds: 3600,
};

test('occurrences counted while a flush finds no alert yet are not lost: every one reaches the database', async () => {
  const raised: number[] = [];
  const asked: number[] = [];
  let releaseAddRepeats: (updated: number) => void = () => {};
  const alerts = {
    // The first raise has not committed when the flush looks: no alert to add repeats to.
    raise: async (_signal: AlertSignal, repeats = 1) => {
      raised.push(repeats);
      return null;
    },
    addRepeats: (_tx: unknown, _type: string, _subject: string, repeats: number) => {
      asked.push(repeats);
      return new Promise<number>((resolve) => (releaseAddRepeats = resolve));
    },
  } as unknown as AlertService;
  const sink = new AlertSink(alerts, (error) => assert.fail(String(error)));

  sink.emit(signal); // raised
  sink.emit(signal); // counted
  sink.emit(signal); // counted
  const flushing = sink.flushRepeats(); // takes the 2 counted, asks the database
  sink.emit(signal); // arrives while the database is being asked
  releaseAddRepeats(0); // no alert yet: the 2 go through raise()
  await flushing;
  await sink.idle();
  assert.deepEqual(raised, [1, 2], 'the first raise, then the two repeats through raise()');

  // The one that arrived meanwhile is still counted, and the next flush adds it to the alert.
  const next = sink.flushRepeats();
  releaseAddRepeats(1);
  await next;
  assert.deepEqual(asked, [2, 1], 'the second flush adds the occurrence that arrived during the first');
  const delivered = raised.reduce((a, b) => a + b, 0) + asked[1]!;
  assert.equal(delivered, 4, 'four emitted, four counted');
});
