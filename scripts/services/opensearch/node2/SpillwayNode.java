/*
 * OpenSearch 2.x: Node's constructor that takes classpath plugins is protected and takes the
 * plugin classes. (3.x takes PluginInfo instead: see ../node3/SpillwayNode.java.)
 */

import org.opensearch.env.Environment;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;

import java.util.Collection;

final class SpillwayNode extends Node {
    SpillwayNode(Environment environment, Collection<Class<? extends Plugin>> plugins) {
        super(environment, plugins, true);
    }
}
