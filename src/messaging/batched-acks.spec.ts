import type { Channel, ConsumeMessage } from 'amqplib';
import { BatchedAcks } from './broker-consumer.service';

/** A channel that records its acks (the one method BatchedAcks calls). */
function recordingChannel(): { ch: Channel; acks: Array<[number, boolean | undefined]> } {
  const acks: Array<[number, boolean | undefined]> = [];
  const ch = { ack: (msg: ConsumeMessage, allUpTo?: boolean) => acks.push([msg.fields.deliveryTag, allUpTo]) } as unknown as Channel;
  return { ch, acks };
}

const msg = (tag: number): ConsumeMessage => ({ fields: { deliveryTag: tag } }) as unknown as ConsumeMessage;

describe('BatchedAcks', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  it('acknowledges the deliveries of 25 ms with one multiple ack of the latest', () => {
    const { ch, acks } = recordingChannel();
    const b = new BatchedAcks(100);
    b.add(ch, msg(1));
    jest.advanceTimersByTime(10);
    b.add(ch, msg(2));
    b.add(ch, msg(3));
    jest.advanceTimersByTime(14);
    expect(acks).toEqual([]);
    jest.advanceTimersByTime(1);
    expect(acks).toEqual([[3, true]]);
    jest.advanceTimersByTime(100);
    expect(acks).toEqual([[3, true]]);
  });

  it('does not wait once maxPending deliveries are pending', () => {
    const { ch, acks } = recordingChannel();
    const b = new BatchedAcks(3);
    for (let tag = 1; tag <= 7; tag++) b.add(ch, msg(tag));
    expect(acks).toEqual([
      [3, true],
      [6, true],
    ]);
    jest.advanceTimersByTime(25);
    expect(acks).toEqual([
      [3, true],
      [6, true],
      [7, true],
    ]);
  });

  it("settles one channel's deliveries before taking another's, and flushes on demand", () => {
    const a = recordingChannel();
    const c = recordingChannel();
    const b = new BatchedAcks(100);
    b.add(a.ch, msg(1));
    b.add(a.ch, msg(2));
    b.add(c.ch, msg(1));
    expect(a.acks).toEqual([[2, true]]);
    expect(c.acks).toEqual([]);
    b.flush();
    expect(c.acks).toEqual([[1, true]]);
    jest.advanceTimersByTime(25);
    expect(c.acks).toEqual([[1, true]]);
  });
});
