/** One event to publish: the channel (= routing key) and the publisher's object. */
export interface OutgoingEvent {
  channel: string;
  event: Record<string, unknown> & { type: string };
  messageId?: string;
}

/**
 * Where the publish API sends events. Without a broker: straight into this instance's hub. With one: through the
 * exchange, so every instance sees the event and it gets its stream position.
 */
export interface EventSink {
  publish(events: OutgoingEvent[]): Promise<void>;
}

export const EVENT_SINK = Symbol('EVENT_SINK');

/** Raised when the sink cannot take events now (broker down): the API answers 503. */
export class SinkUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SinkUnavailableError';
  }
}
