import { Injectable } from '@nestjs/common';

/** What readiness depends on; written by the broker consumer and the shutdown sequence. */
@Injectable()
export class ServiceState {
  shuttingDown = false;
  brokerConfigured = false;
  brokerConnected = false;
  /** The broker consumer has read the stream up to its tail after (re)subscribing, so resumes are answered fully. */
  brokerCaughtUp = false;
  /** `host:port` of the node the AMQP connection uses (declarations, dead letters, publish API); undefined when down. */
  amqpNode: string | undefined;
  /** The node the stream reader reads from (set by the broker consumer). */
  brokerNode: () => string | undefined = () => undefined;
  /**
   * Resolves once every event published before the call has passed through the hub (the broker consumer writes a
   * sync marker and waits to read it back). Without a broker there is nothing to wait for.
   */
  sync: () => Promise<void> = () => Promise.resolve();
  readonly startedAtMs = Date.now();
  private caughtUpWaiters: Array<() => void> = [];

  get ready(): boolean {
    return !this.shuttingDown && (!this.brokerConfigured || (this.brokerConnected && this.brokerCaughtUp));
  }

  /** True when events reach the hub live (no replay or catch-up in progress). */
  get live(): boolean {
    return !this.brokerConfigured || this.brokerCaughtUp;
  }

  /** Resolves when the broker consumer is caught up (at once when it is, or without a broker). */
  whenCaughtUp(): Promise<void> {
    if (this.live) return Promise.resolve();
    return new Promise((resolve) => this.caughtUpWaiters.push(resolve));
  }

  notifyCaughtUp(): void {
    const waiters = this.caughtUpWaiters;
    this.caughtUpWaiters = [];
    for (const w of waiters) w();
  }
}
