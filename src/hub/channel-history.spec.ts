import { ChannelHistory, EVENT_OVERHEAD_BYTES } from './channel-history';
import type { HubEvent } from './hub-event';

function ev(channel: string, position: number, receivedAtMs = Date.now()): HubEvent {
  return { channel, position, frame: Buffer.from('{}'), publishedAtMs: undefined, receivedAtMs };
}

describe('ChannelHistory', () => {
  it('returns every event after the position, merged across channels in order', () => {
    const h = new ChannelHistory({ size: 10, ttlMs: 60_000, maxChannels: 10 }, 0);
    [ev('a', 1), ev('b', 2), ev('a', 3), ev('c', 4), ev('b', 5)].forEach((e) => h.append(e));
    const r = h.since(['a', 'b'], 1);
    expect(r.complete).toBe(true);
    expect(r.events.map((e) => e.position)).toEqual([2, 3, 5]);
  });

  it('is incomplete when events after the position were dropped by count', () => {
    const h = new ChannelHistory({ size: 2, ttlMs: 60_000, maxChannels: 10 }, 0);
    for (let p = 1; p <= 5; p++) h.append(ev('a', p));
    expect(h.since(['a'], 1).complete).toBe(false);
    expect(h.since(['a'], 3)).toMatchObject({ complete: true });
    expect(h.since(['a'], 3).events.map((e) => e.position)).toEqual([4, 5]);
  });

  it('is incomplete when events expired by age', () => {
    const h = new ChannelHistory({ size: 100, ttlMs: 1000, maxChannels: 10 }, 0);
    const t = Date.now();
    h.append(ev('a', 1, t - 5000));
    h.append(ev('a', 2, t));
    expect(h.since(['a'], 0, t).complete).toBe(false);
    expect(h.since(['a'], 1, t).complete).toBe(true);
  });

  it('is incomplete for positions before this instance started reading, or unknown, or in the future', () => {
    const h = new ChannelHistory({ size: 100, ttlMs: 60_000, maxChannels: 10 }, undefined);
    expect(h.since(['a'], 5).complete).toBe(false);
    h.setStartFloor(9);
    h.append(ev('a', 10));
    expect(h.since(['a'], 8).complete).toBe(false);
    expect(h.since(['a'], 9).complete).toBe(true);
    expect(h.since(['quiet'], 9).complete).toBe(true);
    expect(h.since(['a'], 11).complete).toBe(false);
  });

  it('keeps completeness honest when a whole channel log is evicted', () => {
    const h = new ChannelHistory({ size: 100, ttlMs: 60_000, maxChannels: 1 }, 0);
    h.append(ev('a', 1));
    h.append(ev('b', 2)); // evicts channel a
    expect(h.since(['a'], 0).complete).toBe(false);
    expect(h.since(['a'], 1).complete).toBe(true);
  });

  it('drops the least recently written channel, not the first created', () => {
    const h = new ChannelHistory({ size: 100, ttlMs: 60_000, maxChannels: 2 }, 0);
    h.append(ev('a', 1));
    h.append(ev('b', 2));
    h.append(ev('a', 3)); // a is now the most recently written
    h.append(ev('c', 4)); // drops b
    expect(h.evicted.channels).toBe(1);
    expect(h.since(['a'], 0)).toMatchObject({ complete: true });
    expect(h.since(['a'], 0).events.map((e) => e.position)).toEqual([1, 3]);
    expect(h.since(['b'], 0).complete).toBe(false);
    expect(h.since(['b'], 2).complete).toBe(true);
  });

  it('keeps the newest events of a long-lived channel in order as old ones are cut off', () => {
    const h = new ChannelHistory({ size: 3, ttlMs: 60_000, maxChannels: 10 }, 0);
    for (let p = 1; p <= 500; p++) h.append(ev('a', p));
    expect(h.size).toBe(3);
    expect(h.evicted.count).toBe(497);
    expect(h.since(['a'], 497)).toMatchObject({ complete: true });
    expect(h.since(['a'], 497).events.map((e) => e.position)).toEqual([498, 499, 500]);
    expect(h.since(['a'], 496).complete).toBe(false);
  });

  it('keeps within the byte budget by dropping the oldest events across channels, and moves the floors with them', () => {
    const cost = 2 + EVENT_OVERHEAD_BYTES; // a '{}' frame
    const h = new ChannelHistory({ size: 100, ttlMs: 60_000, maxChannels: 10, maxBytes: 4 * cost }, 0);
    // a:1 b:2 a:3 b:4 a:5 b:6: only the four newest fit.
    for (let p = 1; p <= 6; p++) h.append(ev(p % 2 === 1 ? 'a' : 'b', p));
    expect(h.bytes).toBe(4 * cost);
    expect(h.size).toBe(4);
    expect(h.evicted).toMatchObject({ bytes: 2, count: 0, age: 0, channels: 0 });
    // a lost 1, b lost 2: a resume from 0 is incomplete on either; from 2 every later event is there.
    expect(h.since(['a'], 0).complete).toBe(false);
    expect(h.since(['b'], 1).complete).toBe(false);
    const r = h.since(['a', 'b'], 2);
    expect(r.complete).toBe(true);
    expect(r.events.map((e) => e.position)).toEqual([3, 4, 5, 6]);
  });

  it('counts bytes released by the other bounds, so the budget only evicts what it must', () => {
    const cost = 2 + EVENT_OVERHEAD_BYTES;
    const h = new ChannelHistory({ size: 2, ttlMs: 60_000, maxChannels: 10, maxBytes: 3 * cost }, 0);
    for (let p = 1; p <= 5; p++) h.append(ev('a', p)); // the count bound keeps 2
    expect(h.size).toBe(2);
    expect(h.bytes).toBe(2 * cost);
    expect(h.evicted).toMatchObject({ count: 3, bytes: 0 });
    h.append(ev('b', 6));
    h.append(ev('c', 7)); // 4 events > 3: the oldest (a:4) goes
    expect(h.evicted.bytes).toBe(1);
    expect(h.since(['a'], 3).complete).toBe(false);
    expect(h.since(['a'], 4)).toMatchObject({ complete: true });
  });
});
