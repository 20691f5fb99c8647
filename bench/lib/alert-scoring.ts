/**
 * Ground truth against raised alerts: which alerts are about an injected incident (same type,
 * same subject, raised while it happened or shortly after), which incidents no alert reported.
 */

/** Something the trace injected that the detectors of `type` should report. */
export interface Incident {
  type: string;
  /** What was injected, for the report */
  label: string;
  /** When it began and ended, ms since the epoch */
  start: number;
  end: number;
  keyId?: string;
  /** VERIFY_FAILURE_BURST from one source address */
  ip?: string;
  /** NEW_SOURCE_IP: the network the key was used from, as the alert names it (a.b.c.0/24) */
  network?: string;
  /** THRESHOLD: the rule that was crossed */
  ruleId?: string;
}

export interface RaisedAlert {
  id: string;
  type: string;
  /** ms since the epoch */
  createdAt: number;
  message: string;
  keyId: string | null;
  ruleId: string | null;
  details: Record<string, unknown>;
}

export interface TypeScore {
  type: string;
  incidents: number;
  /** Subjects the trace brought close to this detector's line without crossing it */
  decoys: number;
  alerts: number;
  /** Incidents at least one alert reported */
  tp: number;
  /** Further alerts about an incident already reported */
  dup: number;
  /** Alerts about no incident */
  fp: number;
  /** Incidents no alert reported */
  fn: number;
  /** tp / (tp + fp); null when there was nothing to be right or wrong about */
  precision: number | null;
  recall: number | null;
  missed: Incident[];
  falseAlarms: RaisedAlert[];
}

/** An alert may be raised a little before the incident's recorded start (clock and tick granularity). */
const EARLY_MS = 2000;

function sampleIps(alert: RaisedAlert): string[] {
  const sample = alert.details.sample as { ip?: unknown } | undefined;
  return Array.isArray(sample?.ip) ? sample.ip.filter((ip): ip is string => typeof ip === 'string') : [];
}

function sameSubject(incident: Incident, alert: RaisedAlert): boolean {
  switch (incident.type) {
    case 'THRESHOLD':
      return alert.ruleId !== null && alert.ruleId === incident.ruleId;
    case 'NEW_SOURCE_IP':
      return alert.keyId === incident.keyId && alert.details.network === incident.network;
    case 'VERIFY_FAILURE_BURST': {
      // A burst against a key names the key; one from an address has no key and samples that address only.
      if (alert.keyId !== null) return alert.keyId === incident.keyId;
      const ips = sampleIps(alert);
      return incident.ip !== undefined && ips.length === 1 && ips[0] === incident.ip;
    }
    default:
      return alert.keyId !== null && alert.keyId === incident.keyId;
  }
}

export function score(
  types: readonly string[],
  incidents: readonly Incident[],
  alerts: readonly RaisedAlert[],
  decoys: ReadonlyMap<string, number>,
  lateMs: (type: string) => number,
): TypeScore[] {
  return types.map((type) => {
    const mine = incidents.filter((i) => i.type === type);
    const raised = alerts.filter((a) => a.type === type).sort((a, b) => a.createdAt - b.createdAt);
    const reported = new Set<Incident>();
    const falseAlarms: RaisedAlert[] = [];
    let dup = 0;
    for (const alert of raised) {
      const matches = mine.filter(
        (i) => sameSubject(i, alert) && alert.createdAt >= i.start - EARLY_MS && alert.createdAt <= i.end + lateMs(type),
      );
      if (matches.length === 0) falseAlarms.push(alert);
      else {
        const fresh = matches.find((i) => !reported.has(i));
        if (fresh) reported.add(fresh);
        else dup++;
      }
    }
    const tp = reported.size;
    const fp = falseAlarms.length;
    return {
      type,
      incidents: mine.length,
      decoys: decoys.get(type) ?? 0,
      alerts: raised.length,
      tp,
      dup,
      fp,
      fn: mine.length - tp,
      precision: tp + fp === 0 ? (mine.length === 0 ? 1 : null) : tp / (tp + fp),
      recall: mine.length === 0 ? (fp === 0 ? 1 : null) : tp / mine.length,
      missed: mine.filter((i) => !reported.has(i)),
      falseAlarms,
    };
  });
}

export function formatTable(scores: readonly TypeScore[], target: number): string {
  const ratio = (value: number | null) => (value === null ? 'n/a' : value.toFixed(2));
  const mark = (value: number | null) => (value !== null && value >= target ? '' : ' ✗');
  const lines = [
    '| type | incidents | decoys | alerts | TP | dup | FP | FN | precision | recall |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...scores.map(
      (s) =>
        `| ${s.type} | ${s.incidents} | ${s.decoys} | ${s.alerts} | ${s.tp} | ${s.dup} | ${s.fp} | ${s.fn} | ` +
        `${ratio(s.precision)}${mark(s.precision)} | ${ratio(s.recall)}${mark(s.recall)} |`,
    ),
  ];
  const total = scores.reduce((sum, s) => ({ tp: sum.tp + s.tp, fp: sum.fp + s.fp, fn: sum.fn + s.fn }), { tp: 0, fp: 0, fn: 0 });
  lines.push(
    `| all | ${total.tp + total.fn} | ${scores.reduce((n, s) => n + s.decoys, 0)} | ${scores.reduce((n, s) => n + s.alerts, 0)} | ` +
      `${total.tp} | ${scores.reduce((n, s) => n + s.dup, 0)} | ${total.fp} | ${total.fn} | ` +
      `${ratio(total.tp / Math.max(1, total.tp + total.fp))} | ${ratio(total.tp / Math.max(1, total.tp + total.fn))} |`,
  );
  return lines.join('\n');
}
