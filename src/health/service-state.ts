import { Injectable } from '@nestjs/common';

/** What readiness depends on; written by the broker consumer and the shutdown sequence. */
@Injectable()
export class ServiceState {
  shuttingDown = false;
  brokerConfigured = false;
  brokerConnected = false;
  /** The broker consumer has caught up with the stream after (re)starting, so resumes are answered fully. */
  brokerCaughtUp = false;
  /** `host:port` of the node the AMQP connection uses (declarations, dead letters, publish API); undefined when down. */
  brokerNode: string | undefined;
  readonly startedAtMs = Date.now();

  get ready(): boolean {
    return !this.shuttingDown && (!this.brokerConfigured || (this.brokerConnected && this.brokerCaughtUp));
  }
}
